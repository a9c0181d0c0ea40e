"""Updating an ivf-pq index whose inverted lists live on disk (``<stem>.ivfdata``) without a rebuild.

An on-disk list cannot drop entries in place safely (the old file must survive a crash), so the update writes a
new ``.ivfdata`` into the staged folder, in the order a build does it: the added rows are encoded into block
files with the trained cells and codebooks (:func:`embedtool.indexing.build.fill_block`), the old lists and the
blocks are merged list by list (faiss ``merge_from_multiple``, as ``merge_ondisk`` merges a build's blocks), and
then, list by list in the new file, the removed entries are dropped and the kept ones renumbered to their rows in
the new export. The old files are only read. The cost is one sequential copy of the codes (about 40 bytes a
vector): no training, no encoding of the old vectors, no scan of the collection. The same path moves an index
whose codes were kept in memory onto disk once the library has grown past the memory budget.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np

from embedtool.errors import EmbedtoolError
from embedtool.indexing.build import fill_block
from embedtool.indexing.search import faiss_stdout_silenced
from embedtool.progress import Progress


def read_trained(path: Path, on_disk: bool) -> faiss.Index:
    """The ivf-pq index at ``path`` as it was written; its on-disk lists memory-mapped read-only."""
    with faiss_stdout_silenced():
        if on_disk:
            return faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY)
        return faiss.read_index(str(path))


def check_vector_count(index: faiss.Index, path: Path, rows: int) -> None:
    """Refuse an index whose vector count is not its id tables' ``rows`` (one of them was replaced)."""
    if index.ntotal != rows:
        raise EmbedtoolError(
            f"{path} holds {index.ntotal} vectors, its id tables {rows}: re-make it with `embedtool index --rebuild`."
        )


def update_on_disk(
    path: Path,
    on_disk: bool,
    stage: Path,
    stem: str,
    remap: np.ndarray,
    added: Iterable[tuple[np.ndarray, np.ndarray]],
    n_added: int = 0,
    progress: Progress | None = None,
    label: str = "segment index",
) -> faiss.Index:
    """The ivf-pq index at ``path`` (lists on disk when ``on_disk``, else in the file) updated into
    ``stage/<stem>.ivfdata``: entries whose ``remap[old id]`` is -1 dropped, the others renumbered to it, and
    the ``added`` blocks of (rows, vectors) added, each encoded into a block file of its own (``n_added`` rows
    in all, for progress). Returns the updated index, whose lists are in the new file."""
    previous = read_trained(path, on_disk)
    check_vector_count(previous, path, len(remap))
    old_lists = faiss.extract_index_ivf(previous).invlists
    index = read_trained(path, on_disk)  # a second copy, to become the updated index
    ivf = faiss.extract_index_ivf(index)
    empty = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    ivf.replace_invlists(empty, True)
    empty.this.disown()  # the index owns (and frees) its lists
    index.ntotal = ivf.ntotal = 0
    trained = faiss.serialize_index(index)  # trained and empty: what a build's blocks start from
    blocks_dir = stage / f".{stem}-update-blocks"
    blocks_dir.mkdir(parents=True, exist_ok=True)
    try:
        blocks, done = [], 0
        for i, (rows, vectors) in enumerate(added):
            file = fill_block(trained, vectors, rows, blocks_dir / f"block-{i:05d}.faiss")
            blocks.append(faiss.read_index(str(file), faiss.IO_FLAG_MMAP))
            done += len(rows)
            if progress:
                progress(f"{label}: encoding the added vectors", done, n_added)
        lists = faiss.InvertedListsPtrVector()
        for held in [old_lists, *(faiss.extract_index_ivf(b).invlists for b in blocks)]:
            lists.push_back(held)
        if progress:
            progress(f"{label}: copying the kept codes", 0, 1)
        with faiss_stdout_silenced():  # faiss prints the file's sizes as it grows it
            merged = faiss.OnDiskInvertedLists(ivf.nlist, ivf.code_size, str(stage / f"{stem}.ivfdata"))
            merged.merge_from_multiple(lists.data(), lists.size(), False)
        total = _drop_and_renumber(merged, old_lists, remap)
        del blocks, lists, previous
    finally:  # (a failed update leaves the stage to a full build: no block files in it)
        shutil.rmtree(blocks_dir)
    ivf.replace_invlists(merged, True)
    merged.this.disown()  # the index owns (and frees) its lists
    index.ntotal = ivf.ntotal = total
    return index


def _drop_and_renumber(lists: faiss.InvertedLists, old_lists: faiss.InvertedLists, remap: np.ndarray) -> int:
    """In each list of ``lists`` (the old entries first, as many as ``old_lists`` holds, then the added ones),
    drop the old entries whose new id is -1 and renumber the rest, in place. Returns the entries left."""
    code_size = lists.code_size
    total = 0
    for at in range(lists.nlist):
        size, n_old = lists.list_size(at), old_lists.list_size(at)
        if n_old:
            ids = faiss.rev_swig_ptr(lists.get_ids(at), size)  # the new file's own ids, changed in place
            new = remap[ids[:n_old]]
            keep = new >= 0
            if keep.all():
                ids[:n_old] = new
            else:
                codes = faiss.rev_swig_ptr(lists.get_codes(at), size * code_size).reshape(size, code_size)
                order = np.concatenate([np.flatnonzero(keep), np.arange(n_old, size)])
                codes[: len(order)] = codes[order]
                ids[: len(order)] = np.concatenate([new[keep], ids[n_old:]])
                size = len(order)
                lists.resize(at, size)
        total += size
    return total
