"""unfreeze: fine-tune an ImageNet-pretrained InceptionV3 on image folders, reproducibly."""

__version__ = "0.2.0"
