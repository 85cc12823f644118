"""Hashed categorical IDs, in Spark and in pure Python, agreeing bit for bit.

bucket(name, value) = 0                                            if value is null
                    = 1 + pmod(xxhash64(name, string(value)), buckets - 1)   otherwise

Spark's ``xxhash64(a, b)`` is XXH64 over b's UTF-8 bytes seeded with XXH64 over a's
bytes seeded with 42, read as a signed 64-bit integer; ``hash_bucket`` reproduces that
so a model's inputs can be built outside Spark (serving, debugging) exactly as inside.
Bucket 0 is reserved for null/unknown and doubles as the embedding padding row.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

SPARK_SEED = 42
_MASK = (1 << 64) - 1
_P1 = 0x9E3779B185EBCA87
_P2 = 0xC2B2AE3D27D4EB4F
_P3 = 0x165667B19E3779F9
_P4 = 0x85EBCA77C2B2AE63
_P5 = 0x27D4EB2F165667C5


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _MASK


def _round(acc: int, lane: int) -> int:
    acc = (acc + lane * _P2) & _MASK
    return (_rotl(acc, 31) * _P1) & _MASK


def _merge_round(acc: int, val: int) -> int:
    acc ^= _round(0, val)
    return (acc * _P1 + _P4) & _MASK


def xxh64(data: bytes, seed: int) -> int:
    """Reference XXH64 (unsigned result); ``seed`` is taken modulo 2**64."""
    seed &= _MASK
    n = len(data)
    i = 0
    if n >= 32:
        v1 = (seed + _P1 + _P2) & _MASK
        v2 = (seed + _P2) & _MASK
        v3 = seed
        v4 = (seed - _P1) & _MASK
        while i + 32 <= n:
            v1 = _round(v1, int.from_bytes(data[i : i + 8], "little"))
            v2 = _round(v2, int.from_bytes(data[i + 8 : i + 16], "little"))
            v3 = _round(v3, int.from_bytes(data[i + 16 : i + 24], "little"))
            v4 = _round(v4, int.from_bytes(data[i + 24 : i + 32], "little"))
            i += 32
        h = (_rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)) & _MASK
        for v in (v1, v2, v3, v4):
            h = _merge_round(h, v)
    else:
        h = (seed + _P5) & _MASK
    h = (h + n) & _MASK
    while i + 8 <= n:
        h ^= _round(0, int.from_bytes(data[i : i + 8], "little"))
        h = (_rotl(h, 27) * _P1 + _P4) & _MASK
        i += 8
    if i + 4 <= n:
        h ^= (int.from_bytes(data[i : i + 4], "little") * _P1) & _MASK
        h = (_rotl(h, 23) * _P2 + _P3) & _MASK
        i += 4
    while i < n:
        h ^= (data[i] * _P5) & _MASK
        h = (_rotl(h, 11) * _P1) & _MASK
        i += 1
    h ^= h >> 33
    h = (h * _P2) & _MASK
    h ^= h >> 29
    h = (h * _P3) & _MASK
    h ^= h >> 32
    return h


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= (1 << 63) else x


def spark_xxhash64(name: str, value: str) -> int:
    """What Spark's ``xxhash64(lit(name), value)`` returns for two non-null strings."""
    seed = xxh64(name.encode("utf-8"), SPARK_SEED)
    return _signed(xxh64(value.encode("utf-8"), seed))


def value_text(value: object) -> str | None:
    """How a raw value becomes the string that is hashed (matches Spark's cast to string)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def hash_bucket(name: str, value: object, buckets: int) -> int:
    text = value_text(value)
    if text is None:
        return 0
    return 1 + spark_xxhash64(name, text) % (buckets - 1)


def hash_bucket_col(name: str, value: Column, buckets: int) -> Column:
    """Spark twin of ``hash_bucket`` (pure SQL functions, no UDF)."""
    text = value.cast("string")
    hashed = F.pmod(F.xxhash64(F.lit(name), text), F.lit(buckets - 1)) + F.lit(1)
    return F.when(text.isNull(), F.lit(0)).otherwise(hashed).cast("int")
