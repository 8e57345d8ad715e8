"""Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", arXiv:1610.02391) for the five ppvit families, in Paddle dygraph.

For a target layer with activations ``A`` (``K`` channels on an ``h x w`` grid) and the logit ``y_c`` of class
``c``, the map is ``ReLU(sum_k alpha_k A_k)`` with ``alpha_k = mean_{i,j} dy_c / dA_k[i, j]`` (the gradient
averaged over the grid), upsampled bilinearly to the input's ``H x W`` and divided by its maximum, so it lies
in [0, 1] (all zeros when no location has positive evidence for the class).

The activations are caught with a forward post-hook on the target layer and the gradient taken with
``paddle.grad``: the model files are untouched. Token layers (``[B, T, C]``, ConViT) are reshaped to the
patch grid first, the class token left out.

Default target layers (:func:`default_target_layer`), the last layer whose output still has a spatial grid
that the class score depends on:

- Conv2Former: the last stage (``stages[-1]``; ``layers[-1]`` for the 32x32 CIFAR model), ``H/32`` (CIFAR
  model: ``H/8``);
- ConViT: ``blocks[-1].norm1``, the tokens entering the last block (the last block's own patch outputs do not
  reach the class token, so their gradient is zero), on the ``H/patch_size`` patch grid;
- CoAtNet: the last stage ``s4`` (transformer blocks with a feature-map output), ``H/32``;
- ConvMixer: the last ConvMixer block (``model[depth + 2]``), ``H/patch_size``;
- DilateFormer: the last stage (``stages[-1]``, no downsampling), ``H/32``.
"""
import numpy as np

__all__ = ["GradCAM", "default_target_layer", "gradcam_overlay"]


def default_target_layer(model):
    """``(name, layer)``: the family's default Grad-CAM layer (see the module docstring).

    Raises ``ValueError`` for a model that is not one of the five families (pass ``target_layer=`` then).
    """
    from ..models.coatnet import CoAtNet
    from ..models.conv2former import Conv2Former, Conv2FormerCifar
    from ..models.convit import ConViT
    from ..models.convmixer import ConvMixer
    from ..models.dilateformer import DilateFormer

    if isinstance(model, Conv2Former):
        name = f"stages.{len(model.stages) - 1}"
    elif isinstance(model, Conv2FormerCifar):
        name = f"layers.{len(model.layers) - 1}"
    elif isinstance(model, ConViT):
        name = f"blocks.{len(model.blocks) - 1}.norm1"
    elif isinstance(model, CoAtNet):
        name = "s4"
    elif isinstance(model, ConvMixer):
        name = str(model.depth + 2)
    elif isinstance(model, DilateFormer):
        name = f"stages.{len(model.stages) - 1}"
    else:
        raise ValueError(f"no default Grad-CAM layer for {type(model).__name__}: pass target_layer= (a sublayer "
                         "or its name in model.named_sublayers())")
    return name, _sublayer(model, name)


def _sublayer(model, name):
    layers = dict(model.named_sublayers())
    if name not in layers:
        raise ValueError(f"target_layer {name!r} is not a sublayer of {type(model).__name__}; "
                         "names are those of model.named_sublayers()")
    return layers[name]


class GradCAM:
    """Grad-CAM maps of a ppvit classifier (``paddle.nn.Layer`` returning logits ``[B, num_classes]``).

    Args:
        model: the classifier; run in eval mode during a call (its mode is restored afterwards).
        target_layer: a sublayer, its name in ``model.named_sublayers()``, or None for the family's default
            (:func:`default_target_layer`). Its output must be NCHW ``[B, C, h, w]`` or tokens ``[B, T, C]``
            with ``T = h * w`` or ``h * w + 1`` (a leading class token, left out).

    Call: ``cam(x, class_ids=None) -> np.ndarray [B, H, W] float32`` in [0, 1], ``x`` an NCHW float32 batch
    (numpy or ``paddle.Tensor``, normalised as the model expects); ``class_ids``: one class per image (an int
    for all), default the predicted (top-1) class. After a call, ``self.class_ids`` holds the classes explained,
    ``self.logits`` the model's logits ``[B, num_classes]``, ``self.activations`` / ``self.gradients`` the
    target layer's NCHW activations and ``d(sum_b y_{b, c_b}) / dA`` and ``self.raw`` the maps before
    upsampling and scaling ``[B, h, w]``. Raises ``ValueError`` for a bad input, a class id out of range, or a
    target layer the class scores do not depend on.
    """

    def __init__(self, model, target_layer=None):
        import paddle

        if not isinstance(model, paddle.nn.Layer):
            raise TypeError(f"GradCAM needs a paddle.nn.Layer, got {type(model).__name__}")
        self.model = model
        if target_layer is None:
            self.layer_name, self.layer = default_target_layer(model)
        elif isinstance(target_layer, str):
            self.layer_name, self.layer = target_layer, _sublayer(model, target_layer)
        elif isinstance(target_layer, paddle.nn.Layer):
            names = [n for n, l in model.named_sublayers() if l is target_layer]
            if not names:
                raise ValueError("target_layer is not a sublayer of the model")
            self.layer_name, self.layer = names[0], target_layer
        else:
            raise TypeError(f"target_layer must be None, a layer name or a paddle.nn.Layer, "
                            f"got {type(target_layer).__name__}")
        self.class_ids = self.logits = self.activations = self.gradients = self.raw = None

    def _grid(self, tokens):
        """(h, w, leading tokens to drop) for ``tokens`` tokens: the model's patch grid where it has one."""
        grid = getattr(getattr(self.model, "patch_embed", None), "grid_size", None)
        if grid is not None:
            h, w = int(grid[0]), int(grid[1])
        else:
            side = int(round(np.sqrt(tokens - (0 if round(np.sqrt(tokens)) ** 2 == tokens else 1))))
            h = w = side
        extra = tokens - h * w
        if extra not in (0, 1):
            raise ValueError(f"target layer {self.layer_name!r} gives {tokens} tokens, which do not fit a "
                             f"{h}x{w} patch grid (with at most one class token)")
        return h, w, extra

    def _to_nchw(self, t):
        if t.ndim == 4:
            return t
        if t.ndim == 3:
            h, w, extra = self._grid(t.shape[1])
            return t[:, extra:, :].transpose([0, 2, 1]).reshape([t.shape[0], t.shape[2], h, w])
        raise ValueError(f"target layer {self.layer_name!r} outputs shape {list(t.shape)}: Grad-CAM needs an "
                         "NCHW map or [B, tokens, C]")

    def __call__(self, x, class_ids=None):
        import paddle
        import paddle.nn.functional as F

        from ..kernels import use_kernels

        x = paddle.to_tensor(np.asarray(x, dtype=np.float32)) if not isinstance(x, paddle.Tensor) else x
        if x.ndim != 4:
            raise ValueError(f"GradCAM expects an NCHW batch [B, C, H, W], got shape {list(x.shape)}")
        x = x.astype("float32")
        x.stop_gradient = False  # the graph is built even when the model's parameters are frozen
        caught = []
        handle = self.layer.register_forward_post_hook(lambda layer, inputs, output: caught.append(output))
        was_training = self.model.training
        self.model.eval()
        try:
            # Paddle's own ops: ppvit's kernels (PyLayers with hand-written backwards) answer a full backward,
            # not paddle.grad's partial one
            with paddle.set_grad_enabled(True), use_kernels(False):
                logits = self.model(x)
                if isinstance(logits, (list, tuple)):
                    logits = logits[0]
                if not caught:
                    raise ValueError(f"target layer {self.layer_name!r} was not called in the forward pass")
                act = caught[-1]
                if isinstance(act, (list, tuple)):
                    act = act[0]
                batch, num_classes = logits.shape
                if class_ids is None:
                    ids = np.argmax(logits.numpy(), axis=1)
                else:
                    ids = np.asarray(class_ids).ravel()
                    if ids.size not in (1, batch) or not np.issubdtype(ids.dtype, np.integer):
                        raise ValueError(f"class_ids must be one class index or one per image ({batch}), "
                                         f"got {class_ids!r}")
                    ids = np.broadcast_to(ids, (batch,)).astype(np.int64)
                    bad = [int(c) for c in ids if not 0 <= c < num_classes]
                    if bad:
                        raise ValueError(f"class_ids {bad} out of range for a model with {num_classes} classes")
                # images are independent in eval mode: one backward of the summed scores gives each its gradient
                onehot = paddle.to_tensor(np.eye(num_classes, dtype=np.float32)[ids])
                score = (logits * onehot).sum()
                (grad,) = paddle.grad(score, act, allow_unused=True)
        finally:
            handle.remove()
            self.model.train() if was_training else self.model.eval()
        if grad is None:
            raise ValueError(f"the class scores do not depend on target layer {self.layer_name!r}")
        act, grad = self._to_nchw(act.detach()), self._to_nchw(grad)
        weights = grad.mean(axis=[2, 3], keepdim=True)  # alpha_k: B, K, 1, 1
        raw = F.relu((weights * act).sum(axis=1, keepdim=True))  # B, 1, h, w
        up = F.interpolate(raw, size=list(x.shape[2:]), mode="bilinear", align_corners=False)[:, 0].numpy()
        peak = up.reshape(batch, -1).max(axis=1).reshape(batch, 1, 1)
        maps = np.where(peak > 0, up / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)
        self.class_ids = [int(c) for c in ids]
        self.logits = logits.detach().numpy()
        self.activations, self.gradients, self.raw = act.numpy(), grad.numpy(), raw[:, 0].numpy()
        return np.clip(maps, 0.0, 1.0)


def gradcam_overlay(image, cam, alpha=0.5):
    """An RGB uint8 picture of ``cam`` ([H, W] in [0, 1]) over ``image`` (RGB uint8 HWC): matplotlib's "jet"
    colours at ``alpha`` over the image."""
    from matplotlib import colormaps

    heat = colormaps["jet"](np.clip(np.asarray(cam, np.float64), 0, 1))[..., :3] * 255.0
    return np.clip(np.rint(alpha * heat + (1 - alpha) * np.asarray(image, np.float64)), 0, 255).astype(np.uint8)
