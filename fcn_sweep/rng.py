"""Dropout bits from a counter, not a generator: (member key, step, position) -> 16 bits.

A pack of K runs needs every member's dropout masks to be the ones it would draw alone, and a
stateful generator per member costs one draw call per member per layer and step: the operations
of a step then grow with K. Here a mask is a pure function of its coordinates, so one set of
tensor operations makes the masks of all members at once, on any device, inside a CUDA graph too
(the step counter is a device tensor).

The function is SplitMix64 (Steele, Lea & Flood, OOPSLA 2014): word `i` of a stream keyed `key` is
`mix(key + i * GAMMA)`, with `mix` the MurmurHash3-style finalizer. Word index `i` is
`step * 2**32 + position`, so no two words of one member's run share an index; a step's draws
for all its dropout layers are one block (the first layer's units, then the next layer's), made
in one set of operations, and each 64-bit word is cut into four 16-bit draws. torch has no
unsigned 64-bit shift, so a logical shift is an arithmetic one with the sign-extended bits masked
off; multiplication wraps modulo 2**64 as the algorithm wants.
"""

from __future__ import annotations

import numpy as np
import torch


def _signed(x: int) -> int:
    """A 64-bit pattern as the int64 value that holds it."""
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


GAMMA = _signed(0x9E3779B97F4A7C15)
_PER_COUNTER = _signed(0x9E3779B97F4A7C15 << 32)  # GAMMA * 2**32: one step apart
_MIX = ((30, _signed(0xBF58476D1CE4E5B9)), (27, _signed(0x94D049BB133111EB)), (31, None))


def member_key(seed: int) -> int:
    """A run's 64-bit dropout key, derived from its seed alone (as its initial weights are)."""
    return _signed(int(np.random.SeedSequence([seed, 1]).generate_state(1, np.uint64)[0]))


class CounterBits:
    """Uniform int16 draws for all members at once: `draw(counter, n)` is (K, n), row k from keys[k]."""

    def __init__(self, keys: torch.Tensor):
        self.keys = keys.view(-1, 1)  # (K, 1) int64
        self._offsets: dict[int, torch.Tensor] = {}  # words -> i * GAMMA for word i of a step

    def _word_offsets(self, words: int) -> torch.Tensor:
        if words not in self._offsets:
            i = torch.arange(words, dtype=torch.int64, device=self.keys.device)
            self._offsets[words] = i.mul_(GAMMA)
        return self._offsets[words]

    def draw(self, counter: torch.Tensor, n: int) -> torch.Tensor:
        """`counter` (an int64 scalar tensor: the step) selects the block of words."""
        words = (n + 3) // 4
        x = torch.add(self._word_offsets(words), self.keys + counter * _PER_COUNTER)
        shifted = torch.empty_like(x)
        for shift, multiplier in _MIX:
            torch.bitwise_right_shift(x, shift, out=shifted)
            shifted.bitwise_and_((1 << (64 - shift)) - 1)  # the logical shift: sign bits off
            x.bitwise_xor_(shifted)
            if multiplier is not None:
                x.mul_(multiplier)
        return x.view(torch.int16)[:, :n]
