"""ResNet50 from scratch, as the course builds it: bottleneck identity and convolutional blocks.

Layer names follow Keras applications (`conv3_block2_1_conv`): stage, block within the stage, and
the position in the block, so weights and reports line up across runs.
"""

import keras

from stages.models.augmentation import augment
from stages.models.heads import classifier_output

# (filters of the three convolutions, stride of the first block, number of blocks) for stages 2-5.
STAGES = {
    2: ((64, 64, 256), 1, 3),
    3: ((128, 128, 512), 2, 4),
    4: ((256, 256, 1024), 2, 6),
    5: ((512, 512, 2048), 2, 3),
}


def conv_bn(x, filters, kernel_size, name, strides=1, padding="valid", relu=True, momentum=0.99):
    """Conv -> BN(axis 3) [-> ReLU]: one position of a bottleneck."""
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(axis=3, momentum=momentum, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def bottleneck(x, filters, kernel_size, name, strides, momentum=0.99):
    """The main path: 1x1 (stride s) -> fxf same -> 1x1, each with BN, ReLU between."""
    first, middle, last = filters
    x = conv_bn(x, first, 1, f"{name}_1", strides=strides, momentum=momentum)
    x = conv_bn(x, middle, kernel_size, f"{name}_2", padding="same", momentum=momentum)
    return conv_bn(x, last, 1, f"{name}_3", relu=False, momentum=momentum)


def identity_block(x, filters, kernel_size, name, momentum=0.99):
    """Bottleneck plus the unchanged input, then ReLU: keeps the shape (input channels must equal filters[2])."""
    shortcut = x
    x = bottleneck(x, filters, kernel_size, name, strides=1, momentum=momentum)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def convolutional_block(x, filters, kernel_size, name, strides=2, momentum=0.99):
    """Bottleneck plus a 1x1 conv (stride s) + BN shortcut: changes spatial size and channels."""
    shortcut = conv_bn(x, filters[2], 1, f"{name}_0", strides=strides, relu=False, momentum=momentum)
    x = bottleneck(x, filters, kernel_size, name, strides=strides, momentum=momentum)
    x = keras.layers.Add(name=f"{name}_add")([x, shortcut])
    return keras.layers.ReLU(name=f"{name}_out")(x)


def build_resnet50(input_shape, num_classes, kernel_size=3, batch_norm_momentum=0.99, augmentation=None):
    """ResNet50 for small images: 23,600,006 parameters on 64x64x3 with 6 classes.

    batch_norm_momentum: how slowly the batch-norm layers' inference statistics follow training
    (Keras's 0.99 by default); a lower value lets them keep up over few, fast-changing epochs.
    """
    momentum = batch_norm_momentum
    images = keras.Input(shape=input_shape, name="images")
    x = augment(images, augmentation)
    x = keras.layers.ZeroPadding2D(padding=3, name="conv1_pad")(x)
    x = conv_bn(x, 64, 7, "conv1", strides=2, momentum=momentum)
    x = keras.layers.MaxPooling2D(pool_size=3, strides=2, name="pool1_pool")(x)
    for stage, (filters, strides, blocks) in STAGES.items():
        x = convolutional_block(x, filters, kernel_size, f"conv{stage}_block1", strides=strides, momentum=momentum)
        for block in range(2, blocks + 1):
            x = identity_block(x, filters, kernel_size, f"conv{stage}_block{block}", momentum=momentum)
    x = keras.layers.AveragePooling2D(pool_size=2, name="avg_pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.Model(images, classifier_output(num_classes)(x), name="resnet50")
