"""Constants shared by the models' cfgs, the data transforms, export metadata and LIME (timm's ``timm/data/constants.py``)."""

# ImageNet statistics (RGB, on 0..1 pixels), used by the notebooks and every ImageNet model
IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
