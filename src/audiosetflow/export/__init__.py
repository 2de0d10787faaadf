"""Export what the workflow built for other frameworks: WebDataset tars, lhotse manifests, a
Hugging Face ``datasets`` folder, a Croissant description and ``clips.parquet``.

The export is made of *parts* (:func:`~.clips.part_groups`): runs of whole workflow shards of
one split, about ``export.clips_per_part`` selected YTIDs each. Every format writes one file
(or three) per part, reading the part's clips one at a time through
:func:`~.audio.clip_flac_bytes`; the per-split and whole-export files (lhotse manifests per
split, the README, ``clips.parquet``, ``croissant.json``) are joined from the parts, one part
at a time. A part is written again only when one of its shards' tables changed, and then to
the same bytes when its clips are the same (no time stamps in tar or gzip headers).

None of the writers needs the ``[export]`` extra: it holds the libraries that read the
formats back (``webdataset``, ``lhotse``, ``datasets``, ``mlcroissant``).
"""

from .audio import clip_flac_bytes, clip_info
from .clips import ExportClip, LabelNames, fate_rows, iter_clips, part_groups, part_name

__all__ = [
    "clip_flac_bytes",
    "clip_info",
    "ExportClip",
    "LabelNames",
    "fate_rows",
    "iter_clips",
    "part_groups",
    "part_name",
    "FORMATS",
    "PER_PART",
]

#: Every format ``export.formats`` may name.
FORMATS: tuple[str, ...] = ("webdataset", "lhotse", "hf", "croissant")
#: The formats with files per part (croissant is one file).
PER_PART: tuple[str, ...] = ("webdataset", "lhotse", "hf")
