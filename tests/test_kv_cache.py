"""tvad_chat.kv_cache: in-place appends hold exactly what transformers' concatenating DynamicLayer holds."""

from __future__ import annotations

import copy

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from tvad_chat.kv_cache import MIN_ROOM, PreallocatedCache, PreallocatedLayer, empty_cache, preallocated_copy
from tvad_chat.tiny import build_config, build_tokenizer


def states(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 2, n, 8, generator=g), torch.randn(1, 2, n, 8, generator=g)


def test_appends_equal_concatenation_through_growth_and_crop():
    ours, ref = PreallocatedLayer(), DynamicLayer()
    sizes = [300, 1, 1, 5, 1, 200, 1]  # 300 + 256 spare first, so the 200-token append must grow the buffers
    for seed, n in enumerate(sizes):
        k, v = states(n, seed)
        got, want = ours.update(k, v), ref.update(k, v)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert ours.get_seq_length() == ref.get_seq_length() == sum(sizes)
    ours.crop(-7)
    ref.crop(-7)
    k, v = states(3, 99)  # overwrites rows the crop dropped
    assert torch.equal(ours.update(k, v)[0], ref.update(k, v)[0])
    assert torch.equal(ours.values, ref.values)


def test_an_append_writes_only_the_new_rows():
    layer = PreallocatedLayer()
    layer.update(*states(100, 0))
    buffer = layer._key_buffer
    assert buffer.shape[-2] == 100 + MIN_ROOM
    for seed in range(MIN_ROOM):  # the whole spare room fills without a new allocation
        layer.update(*states(1, seed + 1))
        assert layer._key_buffer is buffer and layer.keys.data_ptr() == buffer.data_ptr()
    layer.update(*states(1, 999))
    assert layer._key_buffer is not buffer and layer.get_seq_length() == 100 + MIN_ROOM + 1


def test_copy_is_independent_and_holds_the_shared_prefix():
    source = DynamicCache()
    for i in range(3):
        source.update(*states(50, i), i)
    before = [layer.keys.clone() for layer in source.layers]
    copied = preallocated_copy(source, 40)
    assert isinstance(copied, PreallocatedCache) and copied.get_seq_length() == 40
    for i in range(3):
        keys, _ = copied.update(*states(2, 10 + i), i)
        assert torch.equal(keys[..., :40, :], before[i][..., :40, :])
    assert all(torch.equal(layer.keys, b) for layer, b in zip(source.layers, before))  # source untouched
    # a copy of a copy (the next follow-up) and a deep copy keep appending correctly
    again = preallocated_copy(copied, 41)
    deep = copy.deepcopy(copied)
    for cache in (again, deep):
        k, v = states(1, 77)
        n = cache.get_seq_length()
        keys, _ = cache.update(k, v, 0)
        assert torch.equal(keys[..., :n, :], copied.layers[0].keys[..., :n, :]) and torch.equal(keys[..., n:, :], k)


def test_empty_cache_keeps_sliding_window_layers_to_transformers():
    cfg = build_config(build_tokenizer())
    assert isinstance(empty_cache(cfg), PreallocatedCache)
    cfg.text_config.layer_types = ["sliding_attention"] + cfg.text_config.layer_types[1:]
    cfg.text_config.sliding_window = 16
    assert not isinstance(empty_cache(cfg), PreallocatedCache)
