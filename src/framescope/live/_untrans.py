"""Bitshuffle's bit transpose undone for 16-bit pixels, 64 pixels per step in SIMD registers.

bitshuffle stores a block of ``n`` 16-bit elements as 16 bit-rows of ``n / 8`` bytes: row
``8 * j + k`` holds bit ``k`` of byte ``j`` of every element, element ``8 * m + b`` at bit
``b`` of the row's byte ``m``. Undoing it for 64 elements (byte columns ``c .. c + 7``):

1. load the 8-byte words at column ``c`` of rows 0-7 (low bytes) and 8-15 (high bytes);
2. transpose each set as an 8 x 8 byte matrix (one byte shuffle of 64 bytes), so that word
   ``g`` holds the bit-row bytes of elements ``8 * (c + g) .. + 7``;
3. transpose the 8 x 8 bit matrix inside every word (three shift/mask/xor rounds);
4. interleave low and high bytes into 64 little-endian uint16 (two two-source shuffles).

Written as LLVM vector IR (shuffles, shifts), not x86 intrinsics: LLVM lowers it to
``vpermb``/``vpermt2b`` with AVX-512 VBMI (~4x bitshuffle's AVX2 code here) and to other
instructions elsewhere, so it is correct on every CPU numba targets. Blocks whose element
count is not a multiple of 64 (a frame's last partial block) use bitshuffle's function.
"""

from __future__ import annotations

from typing import Any

import llvmlite.ir as ir
from numba import types
from numba.extending import intrinsic

__all__ = ["untrans16_64"]

_I32, _I64 = ir.IntType(32), ir.IntType(64)
_WORDS = ir.VectorType(_I64, 8)
_BYTES = ir.VectorType(ir.IntType(8), 64)
# 8 x 8 byte transpose: out byte 8 b + k = in byte 8 k + b
_TRANSPOSE = [8 * (i % 8) + i // 8 for i in range(64)]
# low bytes (first operand, 0..63) and high bytes (second, 64..127) interleaved
_FIRST = [i // 2 + (64 if i % 2 else 0) for i in range(64)]
_SECOND = [32 + i // 2 + (64 if i % 2 else 0) for i in range(64)]
_ROUNDS = ((7, 0x00AA00AA00AA00AA), (14, 0x0000CCCC0000CCCC), (28, 0x00000000F0F0F0F0))


def _mask(values: list[int]) -> ir.Constant:
    return ir.Constant(ir.VectorType(_I32, len(values)), values)


def _bit_transpose(builder: ir.IRBuilder, x: Any) -> Any:
    """Transpose the 8 x 8 bit matrix in each 64-bit lane (byte = row, bit = column)."""
    for shift, bits in _ROUNDS:
        s = ir.Constant(_WORDS, [shift] * 8)
        t = builder.and_(builder.xor(x, builder.lshr(x, s)), ir.Constant(_WORDS, [bits] * 8))
        x = builder.xor(builder.xor(x, t), builder.shl(t, s))
    return x


@intrinsic
def untrans16_64(typingctx: Any, src: Any, column: Any, row_bytes: Any, dst: Any,
                 at: Any) -> Any:
    """Write 64 uint16 (128 bytes) to ``dst[at:]`` from byte columns ``column .. + 7`` of a
    bitshuffled block in ``src`` (16 rows of ``row_bytes`` bytes; uint8 arrays). The caller
    checks the bounds: ``src`` holds ``16 * row_bytes``, ``column + 8 <= row_bytes`` and
    ``dst`` holds ``at + 128`` bytes."""
    sig = types.void(src, types.intp, types.intp, dst, types.intp)

    def codegen(context: Any, builder: ir.IRBuilder, signature: Any, args: Any) -> Any:
        src_v, col, nb, dst_v, at_v = args
        src_p = context.make_array(signature.args[0])(context, builder, src_v).data
        dst_p = context.make_array(signature.args[3])(context, builder, dst_v).data
        halves = []
        for first_row in (0, 8):
            words = ir.Constant(_WORDS, None)
            for k in range(8):
                off = builder.add(builder.mul(nb, ir.Constant(_I64, first_row + k)), col)
                ptr = builder.bitcast(builder.gep(src_p, [off]), _I64.as_pointer())
                words = builder.insert_element(words, builder.load(ptr, align=1),
                                               ir.Constant(_I32, k))
            rows = builder.shuffle_vector(builder.bitcast(words, _BYTES),
                                          ir.Constant(_BYTES, None), _mask(_TRANSPOSE))
            halves.append(builder.bitcast(
                _bit_transpose(builder, builder.bitcast(rows, _WORDS)), _BYTES))
        for part, order in enumerate((_FIRST, _SECOND)):
            out = builder.shuffle_vector(halves[0], halves[1], _mask(order))
            where = builder.add(at_v, ir.Constant(_I64, 64 * part))
            ptr = builder.bitcast(builder.gep(dst_p, [where]), _BYTES.as_pointer())
            builder.store(out, ptr, align=1)
        return context.get_dummy_value()

    return sig, codegen
