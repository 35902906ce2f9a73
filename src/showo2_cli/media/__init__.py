"""Reading and writing images and videos, and the small geometry helpers around them.

Everything here is plain functions over numpy arrays, PIL images and torch tensors; nothing
prints. torch is imported only by the two tensor conversions, so the CLI can check inputs and
outputs without paying for it. Every problem a user can cause is raised as one of the
:mod:`showo2_cli.errors` types with a one-line message that names the file:

* :class:`~showo2_cli.errors.InputError` for an input that cannot be used (missing, empty,
  a folder, truncated, corrupt, the wrong kind of media);
* :class:`~showo2_cli.errors.ResourceError` for an input too large to decode safely;
* :class:`~showo2_cli.errors.OutputError` for an output that cannot be written;
* :class:`~showo2_cli.errors.UsageError` for a bad argument value (an unknown extension, a
  size of 0, ...).

Array shape/dtype contract violations by calling code (say a float array handed to
:func:`write_image`) are programming errors and raise :class:`ValueError`.

Conventions
-----------
* Pixel arrays are ``uint8`` RGB, frames ``(T, H, W, 3)``; model tensors are
  ``(3, T, H, W)`` floats in ``[-1, 1]``.
* Size tuples are ``(height, width)``, like torchvision.
* Outputs are written atomically (:func:`atomic_output`): a hidden temporary file in the target
  folder is renamed into place only when the write succeeded, so an error or Ctrl-C never
  leaves a partial file behind.
* Images larger than ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`, or the environment
  variable ``SHOWO2_MAX_PIXELS``) are refused from their header, before any pixel is decoded; but
  ``read_image(min_side=)`` (understanding) decodes a baseline JPEG over it reduced in the DCT, to
  the smallest scale that keeps ``min_side`` and fits the limit.

Layout
------
The package re-exports everything below; import from ``showo2_cli.media`` rather than from a
submodule.

* :mod:`~showo2_cli.media.files`: :func:`check_input_file` (every reader's first check),
  :func:`read_limited` (the small files read whole: configs, prompts, captions),
  :func:`text_encoding` and :func:`decode_text`; :mod:`~showo2_cli.media.probe`:
  :func:`probe_kind`, :func:`check_video`; :mod:`~showo2_cli.media.headers`: what a file's header
  says (Pillow's format and size, FFmpeg's video streams); :mod:`~showo2_cli.media.limits`: the
  pixel limit.
* :mod:`~showo2_cli.media.image`: :func:`read_image`, :func:`write_image`.
* :mod:`~showo2_cli.media.video`: :class:`Media`, :func:`read_video`, :func:`read_media`;
  :mod:`~showo2_cli.media.video_write`: :func:`write_video`.
* :mod:`~showo2_cli.media.geometry`: sizes, resizing, display aspect and matrix, tensor conversion,
  frame counts; :mod:`~showo2_cli.media.frame_index`: which frames of a video to decode;
  :mod:`~showo2_cli.media.animation`: APNG, animated WebP and AVIF, and GIF frames read with Pillow.
* :mod:`~showo2_cli.media.outputs`: :func:`check_output_path` (:class:`OutputFolders` for many),
  :func:`atomic_output`, file names; :mod:`~showo2_cli.media.write_safety`: what every write is
  guarded by (signals deferred, write errors, fsync).
* :mod:`~showo2_cli.media.metadata`: :func:`read_metadata`, :func:`read_png_metadata`.
"""

from __future__ import annotations

from showo2_cli.errors import InputError as InputError
from showo2_cli.errors import OutputError as OutputError
from showo2_cli.errors import ResourceError as ResourceError
from showo2_cli.errors import UsageError as UsageError

from .files import (
    LFS_ADVICE,
    LFS_POINTER,
    MARKUP_ADVICE,
    decode_text,
    lfs_pointer,
    lfs_pointer_note,
    markup,
    read_limited,
    text_encoding,
)
from .geometry import (
    MAX_SIDE,
    frames_to_tensor,
    is_valid_frames,
    latent_frames,
    parse_size,
    pixel_frames,
    resize_and_pad,
    resize_center_crop,
    round_frames,
    tensor_to_frames,
)
from .image import IMAGE_WRITE_EXTS, array_image, image_input, read_image, to_rgb, write_image
from .metadata import METADATA_KEY, PARAMETERS_KEY, read_metadata, read_png_metadata
from .outputs import (
    OutputFolders,
    append_text,
    atomic_folder,
    atomic_output,
    check_folder_keeps_inputs,
    check_output_name,
    check_output_path,
    extension_refused,
    fsync_path,
    is_write_error,
    output_group,
    short_name,
    signals_deferred,
    slugify,
    unique_path,
    write_failed,
)
from .probe import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTS,
    MAX_PIXELS_ENV,
    VIDEO_EXTS,
    PathLike,
    animation_format,
    check_input_file,
    check_video,
    probe_kind,
)
from .video import (
    MAX_DECODED_BYTES,
    MAX_FPS,
    MIN_FPS,
    Media,
    read_media,
    read_video,
    uniform_indices,
)
from .video_write import (
    VIDEO_CONTAINERS,
    VIDEO_WRITE_EXTS,
    check_output_size,
    fps_note,
    write_video,
    written_fps,
)

#: The image formats written with the recorded parameters inside (``write_image``'s ``metadata``):
#: all but BMP, which has no place for them, so generation writes these.
RECORDING_IMAGE_EXTS: tuple[str, ...] = tuple(ext for ext in IMAGE_WRITE_EXTS if ext != ".bmp")


def written_formats() -> str:
    """The extensions a frame or frames are written as (decode's), as the messages name them."""
    return f"{'/'.join(IMAGE_WRITE_EXTS)} for one frame or {'/'.join(VIDEO_WRITE_EXTS)}"


__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTS",
    "IMAGE_WRITE_EXTS",
    "RECORDING_IMAGE_EXTS",
    "MAX_DECODED_BYTES",
    "MAX_FPS",
    "MIN_FPS",
    "MAX_PIXELS_ENV",
    "MAX_SIDE",
    "METADATA_KEY",
    "PARAMETERS_KEY",
    "VIDEO_CONTAINERS",
    "VIDEO_EXTS",
    "VIDEO_WRITE_EXTS",
    "Media",
    "PathLike",
    "animation_format",
    "atomic_folder",
    "atomic_output",
    "append_text",
    "check_folder_keeps_inputs",
    "output_group",
    "signals_deferred",
    "fsync_path",
    "short_name",
    "write_failed",
    "is_write_error",
    "check_input_file",
    "check_output_path",
    "OutputFolders",
    "check_video",
    "frames_to_tensor",
    "is_valid_frames",
    "latent_frames",
    "parse_size",
    "pixel_frames",
    "probe_kind",
    "read_limited",
    "decode_text",
    "lfs_pointer",
    "lfs_pointer_note",
    "LFS_ADVICE",
    "LFS_POINTER",
    "markup",
    "MARKUP_ADVICE",
    "text_encoding",
    "read_image",
    "image_input",
    "array_image",
    "to_rgb",
    "read_media",
    "read_metadata",
    "read_png_metadata",
    "read_video",
    "resize_and_pad",
    "resize_center_crop",
    "round_frames",
    "slugify",
    "tensor_to_frames",
    "uniform_indices",
    "unique_path",
    "write_image",
    "write_video",
    "written_formats",
    "check_output_name",
    "extension_refused",
    "check_output_size",
    "written_fps",
    "fps_note",
]
