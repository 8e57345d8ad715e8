"""timm's feature API: ``FeatureInfo``, ``feature_take_indices`` and the ``features_only`` wrapper.

Every family's model carries ``feature_info``, a list of dicts ``{"num_chs", "reduction", "module"}`` (one per
feature level, in forward order, as timm's), and ``forward_intermediates(x, indices=None, norm=False,
stop_early=False, output_fmt="NCHW", intermediates_only=False)`` with timm's semantics. Hierarchical models
(Conv2Former, CoAtNet, DilateFormer) have one level per stage; isotropic ones have one per block (ConViT: its
tokens reshaped to the patch grid, the cls token left out; ConvMixer: each block's map).

``ppvit.create_model(name, features_only=True, out_indices=...)`` returns ``FeatureGetterNet``: its forward
gives a list of NCHW maps and its ``feature_info`` is a ``FeatureInfo`` (``.channels()``, ``.reduction()``,
``.module_name()``) describing them.
"""
import paddle.nn as nn

__all__ = ["FeatureInfo", "FeatureGetterNet", "feature_take_indices", "default_out_indices", "format_map"]

OUTPUT_FORMATS = ("NCHW", "NHWC")


def _levels(num_features, modules=None):
    if modules:
        return f"{num_features} feature levels ({modules[0]} .. {modules[-1]})"
    return f"{num_features} feature levels"


def feature_take_indices(num_features, indices=None, modules=None, what="indices"):
    """timm's ``feature_take_indices``: which of ``num_features`` levels to return.

    indices: None (all), an int n (the last n levels) or a sequence of level indices (negative ones count
    from the end, as in Python). Returns ``(take, max_index)``: the levels as non-negative indices in forward
    order, and the last one (where ``stop_early`` may stop). ``modules`` (the levels' module names) and
    ``what`` (the argument's name) make the error message.

    Raises ``ValueError`` naming the valid range for a count or an index out of range, a repeated level or
    an empty list.
    """
    where = _levels(num_features, modules)
    if indices is None:
        indices = num_features
    if isinstance(indices, bool) or not isinstance(indices, (int, list, tuple)):
        raise ValueError(f"{what} must be None, an int (the last n levels) or a list of level indices, got "
                         f"{indices!r}")
    if isinstance(indices, int):
        if not 0 < indices <= num_features:
            raise ValueError(f"{what}={indices}: the model has {where}; give a count of the last levels in "
                             f"1..{num_features}, or a list of indices in {-num_features}..{num_features - 1}")
        take = list(range(num_features - indices, num_features))
    else:
        if not indices:
            raise ValueError(f"{what} is an empty list: give at least one level index in "
                             f"{-num_features}..{num_features - 1} (the model has {where})")
        take = []
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int) or not -num_features <= i < num_features:
                raise ValueError(f"{what}={tuple(indices)}: {i!r} is out of range; the model has {where}, "
                                 f"give indices in {-num_features}..{num_features - 1}")
            take.append(i % num_features)
        if len(set(take)) != len(take):
            raise ValueError(f"{what}={tuple(indices)} names a level twice; give each level once (the model "
                             f"has {where})")
        take.sort()
    return take, take[-1]


def default_out_indices(feature_info):
    """``features_only``'s default levels: all of them for a hierarchical model; the last 3 for an isotropic
    one (every level at one reduction: ConViT, ConvMixer), as timm's ViTs."""
    n = len(feature_info)
    isotropic = len({f["reduction"] for f in feature_info}) == 1
    return min(3, n) if isotropic else n


def format_map(x, output_fmt="NCHW"):
    """A [B, C, H, W] map in ``output_fmt`` (``"NCHW"`` as it is, ``"NHWC"`` transposed). Raises
    ``ValueError`` for another format."""
    if output_fmt not in OUTPUT_FORMATS:
        raise ValueError(f"output_fmt must be one of {', '.join(OUTPUT_FORMATS)}, got {output_fmt!r}")
    return x if output_fmt == "NCHW" else x.transpose([0, 2, 3, 1])


class FeatureInfo:
    """timm's ``FeatureInfo``: the feature levels of a model and the ones a ``features_only`` model returns.

    info: one dict per level of the model, ``{"num_chs": channels, "reduction": input side / map side,
    "module": the module whose output it is}``; out_indices: the levels returned (forward order).
    ``channels()`` / ``reduction()`` / ``module_name()`` list them for the returned levels; with ``idx`` (an
    int or a list) for those levels of the whole model, as timm.
    """

    def __init__(self, feature_info, out_indices):
        self.info = [dict(f) for f in feature_info]
        self.out_indices = tuple(out_indices)

    def get(self, key, idx=None):
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys=None, idx=None):
        def pick(d):
            return dict(d) if keys is None else {k: d[k] for k in keys}

        if idx is None:
            return [pick(self.info[i]) for i in self.out_indices]
        if isinstance(idx, (tuple, list)):
            return [pick(self.info[i]) for i in idx]
        return pick(self.info[idx])

    def channels(self, idx=None):
        """Channels of each returned map (``num_chs``)."""
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        """Stride of each returned map relative to the input (input side / map side)."""
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)

    def __getitem__(self, item):
        return self.info[item]

    def __len__(self):
        return len(self.info)

    def __repr__(self):
        return f"FeatureInfo(out_indices={self.out_indices}, channels={self.channels()}, " \
               f"reduction={self.reduction()})"


class FeatureGetterNet(nn.Layer):
    """A backbone: ``forward(x)`` -> list of feature maps ([B, C_i, H / r_i, W / r_i] for NCHW), one per level
    of ``out_indices``, described by ``feature_info`` (``FeatureInfo``). timm's ``FeatureGetterNet``: the
    model's ``forward_intermediates`` with ``intermediates_only`` and ``stop_early`` (nothing after the last
    level taken is computed). The classifier is removed (``reset_classifier(0)``); the model's weights stay
    under ``model.`` in the ``state_dict``.

    out_indices: as ``feature_take_indices`` (None: ``default_out_indices``). norm: apply the model's final
    norm as its ``forward_intermediates`` does. Raises ``ValueError`` for out_indices the model does not have.
    """

    def __init__(self, model, out_indices=None, norm=False, output_fmt="NCHW", name=None):
        super().__init__()
        info = model.feature_info
        if out_indices is None:
            out_indices = default_out_indices(info)
        what = f"out_indices for {name}" if name else "out_indices"
        take, _ = feature_take_indices(len(info), out_indices, [f["module"] for f in info], what)
        if output_fmt not in OUTPUT_FORMATS:
            raise ValueError(f"output_fmt must be one of {', '.join(OUTPUT_FORMATS)}, got {output_fmt!r}")
        model.reset_classifier(0)  # no unused classifier weights in the backbone
        self.model = model
        self.out_indices = tuple(take)
        self.feature_info = FeatureInfo(info, take)
        self.norm = norm
        self.output_fmt = output_fmt
        cfg = getattr(model, "pretrained_cfg", None)
        if cfg is not None:
            self.pretrained_cfg = self.default_cfg = cfg

    def forward(self, x):
        return self.model.forward_intermediates(x, indices=list(self.out_indices), norm=self.norm, stop_early=True,
                                                output_fmt=self.output_fmt, intermediates_only=True)
