"""Block sizes and hashes: blake3 over fixed-size blocks, a file digest over the block hashes.

Block size follows Syncthing: the smallest power of two from 128 KiB to 16 MiB that
cuts the file into fewer than 2000 blocks, so small files cost one hash and huge files
keep their block list short. A file's digest hashes its size, block size and block
hashes, so it identifies the content without a second pass over the bytes.
"""

from __future__ import annotations

import os

import blake3

HASH_LEN = 32
MIN_BLOCK = 128 * 1024
MAX_BLOCK = 16 * 1024 * 1024
TARGET_BLOCKS = 2000
_DIGEST_TAG = b"farm-file-v1\0"


def block_size_for(size: int) -> int:
    """The block size a file of ``size`` bytes is cut into."""
    block = MIN_BLOCK
    while block < MAX_BLOCK and -(-size // block) >= TARGET_BLOCKS:
        block *= 2
    return block


def block_count(size: int, block_size: int) -> int:
    return -(-size // block_size)


def block_length(size: int, block_size: int, index: int) -> int:
    return min(block_size, size - index * block_size)


def hash_block(data: bytes | bytearray | memoryview) -> bytes:
    return blake3.blake3(data).digest()


def file_digest(size: int, block_size: int, hashes: bytes) -> bytes:
    """The content identity of a file: derived from its block hashes, never sent on trust."""
    head = size.to_bytes(8, "big") + block_size.to_bytes(4, "big")
    return blake3.blake3(_DIGEST_TAG + head + hashes).digest()


def hash_fd(fd: int, size: int, block_size: int) -> bytes:
    """Concatenated block hashes of the first ``size`` bytes of an open file.

    Reads one block at a time into one buffer, so memory stays at one block. Raises
    `OSError` (EIO) if the file is shorter than ``size``: it changed while being read.
    """
    out = bytearray()
    buf = bytearray(block_size)
    view = memoryview(buf)
    offset = 0
    while offset < size:
        want = min(block_size, size - offset)
        got = os.preadv(fd, [view[:want]], offset)
        if got <= 0:
            raise OSError(5, f"file ended at {offset} of {size} bytes")
        while got < want:  # short reads happen on some filesystems; finish the block
            more = os.preadv(fd, [view[got:want]], offset + got)
            if more <= 0:
                raise OSError(5, f"file ended at {offset + got} of {size} bytes")
            got += more
        out += blake3.blake3(view[:want]).digest()
        offset += want
    return bytes(out)
