"""Read every header of a FITS file once and describe its usable image HDUs.

This is the only place fitsae parses FITS headers. The result says, per image HDU, where its
bytes are and how to decode them (:class:`ImageHDUInfo`), or why it cannot be used
(:class:`~fitsae.io.errors.FitsInputError`). Training never opens headers again: the manifest
carries these facts to the native decoder.

Auxiliary planes. An image extension named ``TRUTH`` or ``SIGMA`` (what ``fitsae simulate``
writes: the noiseless image and the true per-pixel noise σ, in the physical units of the image)
is not an image of its own but a plane of the nearest image HDU before it. It is recorded on
that image (:attr:`ImageHDUInfo.truth_hdu`, :attr:`ImageHDUInfo.sigma_hdu`) and neither listed
as an image nor rejected. One that cannot serve — no image before it, another shape than its
image, or a second one for the same image — is rejected with the reason, and the image is used
without it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from dataclasses import dataclass

from fitsae.io.errors import FitsInputError
from fitsae.io.native import RAW_DTYPES, DecodeSpec, decode_spec

__all__ = ["ImageHDUInfo", "scan_file", "GZIP_MAGIC", "AUX_EXTNAMES"]

GZIP_MAGIC = b"\x1f\x8b"
# EXTNAME → the ImageHDUInfo field that records where that auxiliary plane is.
AUX_EXTNAMES = {"TRUTH": "truth_hdu", "SIGMA": "sigma_hdu"}


@dataclass(frozen=True)
class ImageHDUInfo:
    """One usable image HDU: 2-D image (1 plane) or 3-D cube (``planes`` planes of ``height × width``).

    ``data_offset`` is the byte offset of the first pixel in the file; it is None when the pixels
    are not stored plainly (tile-compressed HDU or a gzip-compressed file), which sends the HDU
    through the astropy fallback.
    """

    path: str
    hdu: int
    extname: str
    shape: tuple            # numpy order, e.g. (planes, height, width) or (height, width)
    naxis: int              # the header's NAXIS (astropy indexes the data with this many axes)
    bitpix: int
    bscale: float
    bzero: float
    blank: int | None
    compressed: str | None  # None, a tile-compression type (RICE_1, ...) or "gzip-file"
    data_offset: int | None
    file_size: int
    header_noise: float | None
    truth_hdu: int | None = None  # HDU index of this image's TRUTH plane, if any
    sigma_hdu: int | None = None  # HDU index of this image's SIGMA plane, if any

    @property
    def height(self) -> int:
        return int(self.shape[-2])

    @property
    def width(self) -> int:
        return int(self.shape[-1])

    @property
    def planes(self) -> int:
        return int(math.prod(self.shape[:-2])) if len(self.shape) > 2 else 1

    @property
    def spec(self) -> DecodeSpec:
        return decode_spec(self.bitpix, self.bscale, self.bzero, self.blank)


def _number(header, key, default):
    value = header.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value


def _check_file(path: str) -> int:
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise FitsInputError(path, None, "no such file") from None
    except OSError as err:
        raise FitsInputError(path, None, f"cannot stat: {err.strerror or err}") from None
    if os.path.isdir(path):
        raise FitsInputError(path, None, "is a directory")
    if size == 0:
        raise FitsInputError(path, None, "empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            head = f.read(80)
    except OSError as err:
        raise FitsInputError(path, None, f"cannot read: {err.strerror or err}") from None
    if not head.startswith(GZIP_MAGIC) and not head.startswith(b"SIMPLE  ="):
        raise FitsInputError(path, None, "not a FITS file (it does not start with 'SIMPLE  =')")
    if not head.startswith(GZIP_MAGIC) and size < 2880:
        raise FitsInputError(path, None, f"truncated: {size} bytes, less than one 2880-byte FITS block")
    return size


def _describe(path, index, hdu, fileinfo, file_size, gzipped) -> ImageHDUInfo | None:
    from astropy.io import fits

    header = hdu.header
    naxis = header.get("NAXIS", 0)
    if not isinstance(naxis, int) or naxis == 0:
        return None  # a header-only HDU (e.g. the primary of a multi-extension file)
    axes = [header.get(f"NAXIS{k}") for k in range(1, naxis + 1)]
    if any(not isinstance(a, int) or a < 0 for a in axes):
        raise FitsInputError(path, index, f"invalid axis lengths NAXISn={axes}")
    zero = [f"NAXIS{k + 1}=0" for k, a in enumerate(axes) if a == 0]
    if zero:
        raise FitsInputError(path, index, f"zero-length axis ({', '.join(zero)}): the HDU holds no pixels")
    if naxis == 1:
        raise FitsInputError(path, index, f"NAXIS=1 (1-D data of length {axes[0]}), expected a 2-D image or a 3-D cube")
    if naxis > 3 and any(a != 1 for a in axes[3:]):
        raise FitsInputError(
            path, index,
            f"NAXIS={naxis} with axes {axes}, expected a 2-D image or a 3-D cube "
            "(axes beyond the third are accepted only with length 1)")
    bitpix = header.get("BITPIX")
    if bitpix not in RAW_DTYPES:
        raise FitsInputError(path, index, f"unsupported BITPIX={bitpix!r}; FITS allows {list(RAW_DTYPES)}")
    bscale, bzero = _number(header, "BSCALE", 1), _number(header, "BZERO", 0)
    if bscale is None or bzero is None:
        raise FitsInputError(path, index, "BSCALE/BZERO are not numbers")
    if bscale == 0:
        raise FitsInputError(path, index, "BSCALE=0 maps every pixel to BZERO")
    blank = header.get("BLANK") if bitpix > 0 else None
    if blank is not None and (isinstance(blank, bool) or not isinstance(blank, int)):
        raise FitsInputError(path, index, f"BLANK={blank!r} is not an integer")
    noise = header.get("NOISE")
    noise = float(noise) if isinstance(noise, (int, float)) and not isinstance(noise, bool) else None
    shape = tuple(reversed(axes[:3]))
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if isinstance(hdu, fits.CompImageHDU):
        compressed, offset = str(getattr(hdu, "compression_type", None) or "tile-compressed"), None
    elif gzipped:
        compressed, offset = "gzip-file", None
    else:
        compressed, offset = None, int(fileinfo["datLoc"])
        needed = math.prod(shape) * abs(bitpix) // 8
        if offset + needed > file_size:
            raise FitsInputError(
                path, index,
                f"truncated: the data needs {needed} bytes from offset {offset}, "
                f"the file ends after {file_size - offset}")
    try:
        decode_spec(bitpix, bscale, bzero, blank)
    except ValueError as err:
        raise FitsInputError(path, index, str(err)) from None
    return ImageHDUInfo(
        path=path, hdu=index, extname=str(header.get("EXTNAME", "")), shape=shape, naxis=naxis,
        bitpix=bitpix,
        bscale=bscale, bzero=bzero, blank=blank, compressed=compressed, data_offset=offset,
        file_size=file_size, header_noise=noise,
    )


def scan_file(path: str) -> tuple[list[ImageHDUInfo], list[FitsInputError]]:
    """Describe every image HDU of ``path``; never raises for bad input.

    A ``TRUTH`` extension, and the ``SIGMA`` extension of a file ``fitsae simulate`` wrote
    (primary header ``SIMKIND``), are not listed as images: they describe the image HDU before
    them and are recorded on it (``truth_hdu``, ``sigma_hdu``). A ``SIGMA`` extension in anyone
    else's file may be data of its own, so it stays an image.

    Returns
    -------
    images : list of ImageHDUInfo
        Usable image HDUs in file order.
    rejected : list of FitsInputError
        One per unusable HDU, or one for the whole file (``hdu=None``) when it cannot be read
        as FITS at all or holds no image data.
    """
    from astropy.io import fits

    path = os.path.abspath(path)
    try:
        file_size = _check_file(path)
        with open(path, "rb") as f:
            gzipped = f.read(2) == GZIP_MAGIC
    except FitsInputError as err:
        return [], [err]
    images, rejected = [], []
    # astropy reports recoverable header problems as warnings; fitsae turns the fatal ones into
    # rejections and must not let the rest escape (pytest runs with warnings as errors).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
                index = 0
                owner = -1  # the nearest image HDU so far: its place in `images`, None if rejected, -1 none yet
                while True:
                    try:
                        hdu = hdul[index]
                    except IndexError:
                        break
                    except Exception as err:  # a damaged later HDU: keep what came before
                        rejected.append(FitsInputError(path, index, f"unreadable HDU: {_astropy_reason(err)}"))
                        break
                    if index == 0:
                        simulated = "SIMKIND" in hdu.header
                    if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
                        name = str(hdu.header.get("EXTNAME", "")).strip().upper()
                        aux = index > 0 and (name == "TRUTH" or (name == "SIGMA" and simulated))
                        try:
                            info = _describe(path, index, hdu, hdul.fileinfo(index), file_size, gzipped)
                        except FitsInputError as err:
                            rejected.append(err)
                            if not aux:
                                owner = None
                        else:
                            if info is not None and aux:
                                if owner is not None:  # else its image was rejected, and the plane with it
                                    try:
                                        images[owner] = _attach(images[owner] if owner >= 0 else None, info)
                                    except FitsInputError as err:
                                        rejected.append(err)
                            elif info is not None:
                                images.append(info)
                                owner = len(images) - 1
                    index += 1
        except Exception as err:
            return [], [FitsInputError(path, None, f"not readable as FITS: {_astropy_reason(err)}")]
    if not images and not rejected:
        rejected.append(FitsInputError(path, None, "no image HDU with data"))
    return images, rejected


def _attach(image: ImageHDUInfo | None, aux: ImageHDUInfo) -> ImageHDUInfo:
    """``image`` with the auxiliary plane ``aux`` recorded on it; FitsInputError if it cannot be."""
    name = aux.extname.strip().upper()
    if image is None:
        raise FitsInputError(aux.path, aux.hdu, f"{name} extension follows no image HDU, so it is nobody's {name} plane")
    if (aux.shape, aux.naxis) != (image.shape, image.naxis):
        raise FitsInputError(aux.path, aux.hdu, f"{name} extension has shape {list(aux.shape)} (NAXIS={aux.naxis}), "
                                                f"but the image HDU {image.hdu} it follows has {list(image.shape)} "
                                                f"(NAXIS={image.naxis})")
    field = AUX_EXTNAMES[name]
    if getattr(image, field) is not None:
        raise FitsInputError(aux.path, aux.hdu, f"second {name} extension for image HDU {image.hdu} "
                                                f"(HDU {getattr(image, field)} is its {name} plane)")
    return dataclasses.replace(image, **{field: aux.hdu})


def _astropy_reason(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
