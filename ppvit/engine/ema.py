"""Exponential moving average of a model's weights (``Global.ema_decay``)."""
import copy

import paddle


class ModelEMA:
    """Exponential moving average of a model's weights (buffers are copied): ``ema = d*ema + (1-d)*w``."""

    def __init__(self, model, decay):
        self.decay = decay
        self.module = copy.deepcopy(model)
        self.module.eval()
        for p in self.module.parameters():
            p.stop_gradient = True

    @paddle.no_grad()
    def update(self, model):
        own = dict(self.module.named_parameters())
        for name, p in model.named_parameters():
            e = own[name]
            paddle.assign(e * self.decay + p.detach() * (1.0 - self.decay), e)
        own_buffers = dict(self.module.named_buffers())
        for name, b in model.named_buffers():
            if name in own_buffers:
                paddle.assign(b, own_buffers[name])

    def state_dict(self):
        return self.module.state_dict()

    def set_state_dict(self, state):
        self.module.set_state_dict(state)
