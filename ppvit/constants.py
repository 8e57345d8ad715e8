"""Constants shared by the data transforms, export metadata and LIME (timm's ``timm/data/constants.py``)."""

# ImageNet channel statistics on the 0..1 scale (RGB), which every notebook normalises with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
