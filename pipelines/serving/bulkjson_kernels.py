"""The numba kernels of `pipelines.serving.bulkjson`, in their own module so that importing driftlab
does not import numba, and at module level so that numba caches them on disk (a kernel that
calls kernels held in a closure is compiled again in every process: seconds of CPU at the
first bulk request).

The per-value loop (`matrix`) is one function written out in full: a call to a helper that
takes the body array costs a reference count up and down, and a helper per value would make
that the kernel's main cost (`python -m benchmarks --only serving` times the bulk reader).
"""

from __future__ import annotations

import numpy as np
from numba import njit

POW10 = np.array([10.0**e for e in range(23)])  # each exact in a double


@njit(nogil=True, cache=True)
def gather(buf, starts, ends, total):  # type: ignore[no-untyped-def]
    out = np.empty(total, np.uint8)
    at = 0
    for r in range(len(starts)):
        for i in range(starts[r], ends[r]):
            out[at] = buf[i]
            at += 1
    return out


@njit(nogil=True, cache=True)
def ws(buf, i):  # type: ignore[no-untyped-def]
    n = len(buf)
    while i < n and (buf[i] == 32 or buf[i] == 10 or buf[i] == 13 or buf[i] == 9):
        i += 1
    return i


@njit(nogil=True, cache=True)
def key_index(buf, start, end, data, offsets):  # type: ignore[no-untyped-def]
    """Which of the packed names buf[start:end] is; -1 if none."""
    for k in range(len(offsets) - 1):
        lo = offsets[k]
        if offsets[k + 1] - lo != end - start:
            continue
        same = True
        for b in range(end - start):
            if buf[start + b] != data[lo + b]:
                same = False
                break
        if same:
            return k
    return -1


@njit(nogil=True, cache=True)
def skip(buf, i):  # type: ignore[no-untyped-def]
    """After the JSON value at i, found by its brackets and quotes (orjson checks it
    afterwards); -1 if it does not end."""
    n = len(buf)
    depth = 0
    while i < n:
        c = buf[i]
        if c == 34:
            i += 1
            while i < n and buf[i] != 34:
                i += 2 if buf[i] == 92 else 1
            if i >= n:
                return -1
            i += 1
            if depth == 0:
                return i
            continue
        if c == 91 or c == 123:
            depth += 1
        elif c == 93 or c == 125:
            if depth == 0:  # the end of the enclosing object: a scalar ended
                return i
            depth -= 1
            if depth == 0:
                return i + 1
        elif depth == 0 and (c == 44 or c == 32 or c == 10 or c == 13 or c == 9):
            return i
        i += 1
    return i if depth == 0 else -1


@njit(nogil=True, cache=True)
def matrix(buf, i, form, names, name_ends, numeric, slot, numbers, spans):  # type: ignore[no-untyped-def]
    """(rows, end) of the features (form 0) or records (form 1) array at i; end -1."""
    n, width, cap = len(buf), len(numeric), spans.shape[2]
    closer = 93 if form == 0 else 125
    seen = np.zeros(width, np.bool_)
    if i >= n or buf[i] != 91:
        return 0, -1
    i += 1
    while i < n and (buf[i] == 32 or buf[i] == 10 or buf[i] == 13 or buf[i] == 9):
        i += 1
    if i < n and buf[i] == 93:  # no rows: the ordinary path says so
        return 0, -1
    row = 0
    while True:
        if row >= cap or i >= n or buf[i] != (91 if form == 0 else 123):
            return 0, -1
        if form == 1:
            seen[:] = False
        for j in range(width):
            i += 1  # past the opener or the comma
            while i < n and (buf[i] == 32 or buf[i] == 10 or buf[i] == 13 or buf[i] == 9):
                i += 1
            k = j
            if form == 1:  # "name": (the expected name first, then any other)
                if i >= n or buf[i] != 34:
                    return 0, -1
                start = i + 1
                i = start
                while i < n and buf[i] != 34:
                    if buf[i] == 92 or buf[i] < 32 or buf[i] > 127:
                        return 0, -1
                    i += 1
                if i >= n:
                    return 0, -1
                lo, size = name_ends[j], i - start
                same = name_ends[j + 1] - lo == size
                if same:
                    for b in range(size):
                        if buf[start + b] != names[lo + b]:
                            same = False
                            break
                if not same:
                    k = key_index(buf, start, i, names, name_ends)
                    if k < 0:
                        return 0, -1
                if seen[k]:
                    return 0, -1
                seen[k] = True
                i += 1
                while i < n and (buf[i] == 32 or buf[i] == 10 or buf[i] == 13 or buf[i] == 9):
                    i += 1
                if i >= n or buf[i] != 58:
                    return 0, -1
                i += 1
                while i < n and (buf[i] == 32 or buf[i] == 10 or buf[i] == 13 or buf[i] == 9):
                    i += 1
            if i >= n:
                return 0, -1
            if numeric[k]:  # a JSON number read exactly, or give up
                negative = buf[i] == 45
                if negative:
                    i += 1
                if i >= n or buf[i] < 48 or buf[i] > 57:
                    return 0, -1
                mantissa, digits, exp10, integer = 0, 0, 0, True
                if buf[i] == 48:
                    i += 1
                    if i < n and 48 <= buf[i] <= 57:  # a leading zero: not JSON
                        return 0, -1
                else:
                    while i < n and 48 <= buf[i] <= 57:
                        mantissa = mantissa * 10 + (buf[i] - 48)
                        digits += 1
                        i += 1
                if i < n and buf[i] == 46:
                    integer = False
                    i += 1
                    if i >= n or buf[i] < 48 or buf[i] > 57:
                        return 0, -1
                    while i < n and 48 <= buf[i] <= 57:
                        if digits > 15:
                            return 0, -1
                        mantissa = mantissa * 10 + (buf[i] - 48)
                        exp10 -= 1
                        if mantissa:  # zeros after the point and before a digit
                            digits += 1
                        i += 1
                if digits > 15:  # more than a double holds exactly: orjson's exact read
                    return 0, -1
                if i < n and (buf[i] == 101 or buf[i] == 69):
                    integer = False
                    i += 1
                    sign = 1
                    if i < n and (buf[i] == 43 or buf[i] == 45):
                        sign = -1 if buf[i] == 45 else 1
                        i += 1
                    if i >= n or buf[i] < 48 or buf[i] > 57:
                        return 0, -1
                    e = 0
                    while i < n and 48 <= buf[i] <= 57:
                        if e < 10_000:
                            e = e * 10 + (buf[i] - 48)
                        i += 1
                    exp10 += sign * e
                if mantissa == 0:  # "-0" is the integer 0; "-0.0" is the float -0.0
                    v = -0.0 if negative and not integer else 0.0
                elif exp10 < -22 or exp10 > 22:
                    return 0, -1
                else:  # <= 15 digits times an exact power of ten: one rounding, exact
                    v = float(mantissa)
                    v = v * POW10[exp10] if exp10 >= 0 else v / POW10[-exp10]
                    if negative:
                        v = -v
                numbers[slot[k], row] = v
            else:  # a plain ASCII string, or give up
                if buf[i] != 34:
                    return 0, -1
                i += 1
                spans[slot[k], 0, row] = i
                while i < n and buf[i] != 34:
                    if buf[i] == 92 or buf[i] < 32 or buf[i] > 127:
                        return 0, -1
                    i += 1
                if i >= n:
                    return 0, -1
                spans[slot[k], 1, row] = i
                i += 1
            while i < n and (buf[i] == 32 or buf[i] == 10 or buf[i] == 13 or buf[i] == 9):
                i += 1
            if i >= n or buf[i] != (44 if j < width - 1 else closer):
                return 0, -1
        row += 1
        i += 1
        while i < n and (buf[i] == 32 or buf[i] == 10 or buf[i] == 13 or buf[i] == 9):
            i += 1
        if i < n and buf[i] == 44:
            i += 1
            while i < n and (buf[i] == 32 or buf[i] == 10 or buf[i] == 13 or buf[i] == 9):
                i += 1
        elif i < n and buf[i] == 93:
            return row, i + 1
        else:
            return 0, -1


@njit(nogil=True, cache=True)
def parse(buf, names, name_ends, numeric, slot, tops, top_ends, numbers, spans, found):  # type: ignore[no-untyped-def]
    n = len(buf)
    form, rows = -1, 0
    i = ws(buf, 0)
    if i >= n or buf[i] != 123:
        return -1, 0
    while True:
        i = ws(buf, i + 1)
        if i >= n or buf[i] != 34:
            return -1, 0
        end = i + 1
        while end < n and buf[end] != 34:
            if buf[end] == 92 or buf[end] < 32 or buf[end] > 127:
                return -1, 0
            end += 1
        if end >= n:
            return -1, 0
        k = key_index(buf, i + 1, end, tops, top_ends)
        if k < 0 or found[k, 0] >= 0:  # unknown or repeated
            return -1, 0
        i = ws(buf, end + 1)
        if i >= n or buf[i] != 58:
            return -1, 0
        i = ws(buf, i + 1)
        start = i
        if k < 2:
            if form >= 0:  # both forms: the ordinary path says so
                return -1, 0
            form = k
            rows, i = matrix(buf, i, k, names, name_ends, numeric, slot, numbers, spans)
        else:
            i = skip(buf, i)
        if i < 0:
            return -1, 0
        found[k, 0], found[k, 1] = start, i
        i = ws(buf, i)
        if i < n and buf[i] == 44:
            continue
        if i < n and buf[i] == 125:
            break
        return -1, 0
    if ws(buf, i + 1) != n:
        return -1, 0
    return form, rows
