"""Explanations of ppvit classifiers: LIME superpixel attributions, Grad-CAM maps, their faithfulness
(deletion/insertion curves) and their figures."""
from .lime import (  # noqa: F401
    IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, QUICKSHIFT_INTERPRETDL, QUICKSHIFT_LIME, LimeImageExplainer, load_image,
    paddle_predict_fn, predictor_predict_fn, restore_image,
)
from .plots import explanation_image, explanation_mask, overlay_threshold, save_lime_figure  # noqa: F401
from .grid import prediction_grid, save_prediction_grid  # noqa: F401
from .gradcam import GradCAM, default_target_layer, gradcam_overlay  # noqa: F401
from .faithful import faithfulness, lime_saliency  # noqa: F401
