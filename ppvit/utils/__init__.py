"""Small helpers that are not part of the model/engine API (see ``ppvit.utils.notebook``)."""
