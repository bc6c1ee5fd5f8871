"""A key/value cache that appends in place, for the decode loop of tvad_chat.backbone.

transformers' DynamicLayer appends by concatenation, so every decoded token copies the whole cache of every
layer: with a clip's ~1000-token video prefix that copy was half the decode time of the tiny model. Here each
layer keeps its keys and values in buffers with spare room along the sequence and exposes the filled part as
a view, so an append writes only the new rows (the buffers grow by half when full). It stays a DynamicCache
(same layers API, crop, get_seq_length), so the model's own attention code runs unchanged.
"""

from __future__ import annotations

import copy

from torch import Tensor
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

MIN_ROOM = 256  # spare tokens per (re)allocation: a whole answer fits without growing


class PreallocatedLayer(DynamicLayer):
    """A DynamicLayer whose ``keys``/``values`` are prefix views of buffers with room for more tokens."""

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.keys = key_states[..., :0, :]
        self.values = value_states[..., :0, :]
        self._key_buffer = self._value_buffer = None
        self.is_initialized = True

    def _reserve(self, needed: int) -> None:
        """Fresh buffers for ``needed`` tokens plus spare room, holding the current keys and values."""
        capacity = needed + max(MIN_ROOM, needed // 2)
        n = self.keys.shape[-2]
        buffers = []
        for states in (self.keys, self.values):
            buffer = states.new_empty((*states.shape[:-2], capacity, states.shape[-1]))
            buffer[..., :n, :] = states
            buffers.append(buffer)
        self._key_buffer, self._value_buffer = buffers

    def _is_view_of_buffers(self) -> bool:
        # crop() keeps a prefix view; anything else that reassigned keys (deepcopy, batch ops) needs new buffers.
        return (self._key_buffer is not None and self.keys.data_ptr() == self._key_buffer.data_ptr()
                and self.values.data_ptr() == self._value_buffer.data_ptr())

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        n, m = self.keys.shape[-2], key_states.shape[-2]
        if not self._is_view_of_buffers() or n + m > self._key_buffer.shape[-2]:
            self._reserve(n + m)
        self._key_buffer[..., n : n + m, :] = key_states
        self._value_buffer[..., n : n + m, :] = value_states
        self.keys = self._key_buffer[..., : n + m, :]
        self.values = self._value_buffer[..., : n + m, :]
        return self.keys, self.values


class PreallocatedCache(DynamicCache):
    """A DynamicCache of PreallocatedLayers (created lazily by the model's first forward, or given)."""

    def __init__(self, layers: list[PreallocatedLayer] | None = None):
        # Cache's own constructor: DynamicCache's would build plain DynamicLayers.
        if layers is None:
            Cache.__init__(self, layer_class_to_replicate=PreallocatedLayer)
        else:
            Cache.__init__(self, layers=layers)


def preallocated_copy(cache: Cache, n_tokens: int) -> Cache:
    """An independent copy of the first ``n_tokens`` of ``cache``, ready for in-place appends.

    Layers of other kinds (sliding windows, quantised) are deep-copied and cropped instead, as before.
    """
    layers = []
    for layer in cache.layers:
        if type(layer) not in (DynamicLayer, PreallocatedLayer) or not layer.is_initialized:
            other = copy.deepcopy(cache)
            extra = other.get_seq_length() - n_tokens
            if extra > 0:
                other.crop(-extra)
            return other
        new = PreallocatedLayer()
        new.update(layer.keys[..., :n_tokens, :], layer.values[..., :n_tokens, :])  # copies into fresh buffers
        layers.append(new)
    return PreallocatedCache(layers)


def empty_cache(config) -> Cache:
    """A cache for a whole new sequence; the model's own DynamicCache when it has sliding-window layers."""
    layer_types = getattr(config.get_text_config(decoder=True), "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        return DynamicCache(config=config)
    return PreallocatedCache()

