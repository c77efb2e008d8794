"""Frozen ext2 images: the on-disk layout, a read-only reader and a populate-and-freeze builder.

    layout.py    the on-disk structures with the kernel's field names, the block-group
                 layout drawn (start here)
    reader.py    Ext2Image: read-only by construction, checks at open, block maps, lookup
    builder.py   build_image: populate a tree and freeze it into a valid ext2 image

    from xipmodel.ext2 import Ext2Image, Ext2Error, build_image
    with Ext2Image.open(build_image({"/bin/sh": b"..."})) as img:
        img.listdir("/bin"), img.read("/bin/sh"), img.block_map("/bin/sh")
"""

from __future__ import annotations

from xipmodel.errors import (
    CorruptImageError,
    Ext2Error,
    FileTooLargeError,
    NotARegularFileError,
    ReadOnlyImageError,
    SymlinkLoopError,
    TruncatedImageError,
    UnsupportedFeatureError,
)
from xipmodel.ext2.builder import (
    BuildSource,
    Directory,
    Entry,
    File,
    HardLink,
    Symlink,
    build_image,
)
from xipmodel.ext2.layout import GroupDesc, Inode, Superblock
from xipmodel.ext2.reader import Ext2Image, MetadataBlock

__all__ = [
    "BuildSource",
    "CorruptImageError",
    "Directory",
    "Entry",
    "Ext2Error",
    "Ext2Image",
    "File",
    "FileTooLargeError",
    "GroupDesc",
    "HardLink",
    "Inode",
    "MetadataBlock",
    "NotARegularFileError",
    "ReadOnlyImageError",
    "Superblock",
    "Symlink",
    "SymlinkLoopError",
    "TruncatedImageError",
    "UnsupportedFeatureError",
    "build_image",
]
