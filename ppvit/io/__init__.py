"""Files: weight files (``.pdparams``, ``.safetensors``; PyTorch ``.pth`` read without torch), the one
state-dict comparison, and atomic writes (text, strict JSON, any file through ``atomic_path``)."""
from .atomic import atomic_path, write_json, write_text
from .weights import (STATE_DICT_WRAPPERS, CheckpointError, StateDictDiff, check_state_dict, compare_state_dict,
                      load_state, save_state, state_dict_mismatch_message, unwrap_state_dict,
                      weights_mismatch_message)

__all__ = ["STATE_DICT_WRAPPERS", "CheckpointError", "StateDictDiff", "atomic_path", "check_state_dict",
           "compare_state_dict", "load_state", "save_state", "state_dict_mismatch_message", "unwrap_state_dict",
           "weights_mismatch_message", "write_json", "write_text"]
