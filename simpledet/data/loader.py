"""The detection loader: records -> batches of padded images (+ the detector's targets).

Design:
- An epoch's *plan* (which records form which batch, in which order) is a pure function of
  (seed, epoch, records, batch_size, rank, num_parts). Each image's randomness (scale choice,
  flip, then the target assigners' sampling, in the detector's order) is seeded by (seed,
  epoch, global batch index, slot). So batches do not depend on num_workers or on which worker
  built them, and a position (epoch, batch index) is all a checkpoint needs to resume.
- Batches are grouped by aspect ratio: landscape images (w >= h) pad to (short, long), portrait
  ones to (long, short), so the graph sees two static shapes only.
- Worker *processes*, started with 'forkserver' by default: they are forked from a clean server
  process, never from the trainer after MXNet started its engine and OpenMP threads. Like with
  'spawn', a script that iterates a loader with workers needs the
  ``if __name__ == "__main__":`` guard. Workers run NumPy/OpenCV only (cv2.setNumThreads(1));
  they import simpledet, which imports mxnet, but never run an MXNet op.
- Batch i goes to worker i % num_workers over that worker's own pipes, so results come back in
  order without a shared queue, a dead worker is seen through its process sentinel within a
  second, and a worker killed mid-message gives EOF instead of a hang.
- Batches are built straight into shared memory and handed to the consumer without a copy
  (see _WorkerSlots); at most max(prefetch, num_workers) batches are in flight.
"""
import collections
import logging
import mmap
import multiprocessing as mp
import multiprocessing.connection as mp_connection
import os
import pickle
import signal
import time
import traceback
import weakref
from multiprocessing import reduction

import cv2
import numpy as np

from simpledet.data.coco import DatasetError
from simpledet.data.layout import batch_layout
from simpledet.data.targets.base import ImageSample
from simpledet.data.transforms import (
    bucket_shape,
    choose_short_side,
    flip_boxes,
    is_landscape,
    normalize_pad_chw,
    random_flip,
    read_image,
    resize_image,
    scale_boxes,
)

logger = logging.getLogger(__name__)

# Seed-sequence tags keep the plan's and the batches' random streams apart.
_PLAN_STREAM, _BATCH_STREAM = 0, 1


class LoaderError(RuntimeError):
    """A record could not be turned into a sample, or a worker failed or died.

    Attributes:
        worker_traceback: the traceback (text) of the worker process the error happened in;
            None when it happened in this process. The message names the file and record.
    """

    def __init__(self, message, worker_traceback=None):
        super().__init__(message)
        self.worker_traceback = worker_traceback


class WorkerDiedError(LoaderError):
    """A worker process exited, was killed, or stopped answering."""


def _compact_record(record, index):
    """The fields a worker needs, validated, so bad records fail at construction time: the
    image, its boxes and classes, its crowd regions ("crowd_boxes" (M, 4), empty when absent)
    and the boxes' "segmentations" (polygon lists or RLE dicts as in the json, one per box, or
    an empty list when the record has none)."""
    try:
        boxes = np.asarray(record["boxes"], dtype=np.float32).reshape(-1, 4)
        classes = np.asarray(record["classes"], dtype=np.int32).reshape(-1)
        crowd = np.asarray(record.get("crowd_boxes", ()), dtype=np.float32).reshape(-1, 4)
        segmentations = list(record.get("segmentations") or ())
        compact = {"image_id": int(record["image_id"]), "file_name": str(record["file_name"]),
                   "height": int(record["height"]), "width": int(record["width"]),
                   "boxes": boxes, "classes": classes, "crowd_boxes": crowd,
                   "segmentations": segmentations}
    except KeyError as err:
        raise ValueError(f"record {index} has no key {err}; expected the record schema of "
                         "simpledet.data (image_id, file_name, height, width, boxes, classes)"
                         ) from None
    except (TypeError, ValueError) as err:
        raise ValueError(f"record {index} (file {record.get('file_name')}): {err}") from None
    if len(boxes) != len(classes):
        raise ValueError(f"record {index} (file {compact['file_name']}): {len(boxes)} boxes but "
                         f"{len(classes)} classes")
    if segmentations and len(segmentations) != len(boxes):
        raise ValueError(f"record {index} (file {compact['file_name']}): {len(boxes)} boxes but "
                         f"{len(segmentations)} segmentations")
    if compact["height"] <= 0 or compact["width"] <= 0:
        raise ValueError(f"record {index} (file {compact['file_name']}): height/width must be "
                         f"positive, got {compact['height']}x{compact['width']}")
    return compact


class _Pipeline:
    """Everything that turns planned records into a batch; picklable, shared by all workers."""

    def __init__(self, records, *, short_sides, long_side, mean, std, flip, size_divisor,
                 assigners, max_gt, for_training, skip_bad_images):
        self.records = records
        self.short_sides = tuple(int(s) for s in short_sides)
        self.long_side = int(long_side)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.flip = bool(flip) and for_training
        self.size_divisor = int(size_divisor)
        self.assigners = tuple(assigners) if for_training else ()
        self.max_gt = int(max_gt)
        self.for_training = bool(for_training)
        self.skip_bad_images = bool(skip_bad_images)

    def bucket_of(self, record):
        return bucket_shape(record["height"], record["width"], max(self.short_sides),
                            self.long_side, self.size_divisor)

    def _load_image(self, record, rng, out):
        """Reads, resizes, flips and writes one image into out (3, Hb, Wb).

        Returns an ImageSample (boxes and crowd regions in resized, flipped pixels)."""
        image = read_image(record["file_name"], (record["height"], record["width"]))
        short = (choose_short_side(rng, self.short_sides) if self.for_training
                 else max(self.short_sides))
        image, im_info = resize_image(image, short, self.long_side)
        boxes = scale_boxes(record["boxes"], im_info)
        crowd = scale_boxes(record["crowd_boxes"], im_info)
        flipped = False
        if self.flip:
            image, boxes, _, flipped = random_flip(rng, image, boxes)
            if flipped:
                crowd = flip_boxes(crowd, image.shape[1])
        normalize_pad_chw(image, self.mean, self.std, out.shape[1:], out=out)
        return ImageSample(boxes=boxes, classes=record["classes"], crowd_boxes=crowd,
                           im_info=im_info, bucket=tuple(out.shape[1:]), flipped=flipped,
                           record=record)

    def batch_layout(self, indices):
        """{name: (shape, dtype)} of the batch these records make (simpledet.data.layout)."""
        height, width = self.bucket_of(self.records[indices[0]])
        return batch_layout(len(indices), height, width, self.max_gt, self.assigners)

    def build_batch(self, indices, valid, seed_key, batch=None):
        """Builds one batch.

        Args:
            indices: record indices, all of one bucket.
            valid: bools, False for padding slots (test mode).
            seed_key: ints seeding this batch's random stream.
            batch: optional preallocated arrays of batch_layout(indices) to fill (shared
                memory in the workers); every element is written.

        Returns:
            (batch dict, meta dict with "bad_images" [(file, image id, reason)],
            "truncated_gt" int and "target_counts" {counter: int}, the sums of what the
            assigners returned). The batch is None when skip_bad_images skipped every image.

        Raises:
            LoaderError: naming the record's file and image id, for a bad image (unless
                skip_bad_images) or any other failure while processing a record.
        """
        if batch is None:
            batch = {name: np.empty(shape, dtype)
                     for name, (shape, dtype) in self.batch_layout(indices).items()}
        records = [self.records[i] for i in indices]
        bucket = batch["data"].shape[2:]
        batch["im_info"].fill(0)
        batch["gt_boxes"].fill(-1)
        batch["image_ids"][:] = [r["image_id"] for r in records]
        batch["valid"][:] = valid
        meta = {"bad_images": [], "truncated_gt": 0, "target_counts": {}}
        counts = meta["target_counts"]
        good = []
        names = [tuple(a.outputs(*bucket)) for a in self.assigners]
        for slot, record in enumerate(records):
            rng = np.random.default_rng([*seed_key, slot])
            try:
                sample = self._load_image(record, rng, batch["data"][slot])
                for assigner, keys in zip(self.assigners, names):
                    reported = assigner.assign(sample, rng, {k: batch[k][slot] for k in keys})
                    for counter, count in (reported or {}).items():
                        counts[counter] = counts.get(counter, 0) + int(count)
            except DatasetError as err:
                # The reader's messages start with the file name: say it once.
                reason = str(err).removeprefix(f"{record['file_name']}: ")
                if not self.skip_bad_images:
                    raise LoaderError(f"{record['file_name']} (image_id {record['image_id']}): "
                                      f"{reason}") from err
                meta["bad_images"].append((record["file_name"], record["image_id"], reason))
                batch["valid"][slot] = False
                continue
            except Exception as err:
                raise LoaderError(f"{record['file_name']} (image_id {record['image_id']}): "
                                  f"{type(err).__name__}: {err}") from err
            good.append(slot)
            batch["im_info"][slot] = sample.im_info
            kept = min(len(sample.boxes), self.max_gt)
            meta["truncated_gt"] += len(sample.boxes) - kept
            batch["gt_boxes"][slot, :kept, :4] = sample.boxes[:kept]
            batch["gt_boxes"][slot, :kept, 4] = sample.classes[:kept]
        if not good:  # every image skipped: no batch
            return None, meta
        # Slots of skipped images repeat the first good image, flagged valid=False.
        for slot in set(range(len(records))) - set(good):
            for name, array in batch.items():
                if name != "valid":
                    array[slot] = array[good[0]]
        return batch, meta


# Batches travel through shared memory: each worker owns "slots" (memfd files, mapped once by
# the worker and once by the consumer; the fd crosses the result socket when a slot is new).
# A batch is built straight into a free slot; the consumer's arrays are views of it, and when
# the last of them is garbage-collected the slot goes back to the worker (with its next task).
# Measured on an FPN batch of 2 (45 MB): a pickled batch through a pipe costs four copies
# (13 img/s for one worker), fresh shared memory costs page allocation (22 img/s), recycled
# slots cost nothing beyond building the batch.
_SHARED_MEMORY = hasattr(os, "memfd_create")
_ALIGN = 64


def _shared_layout(layout):
    """{name: (shape, dtype)} -> ({name: (offset, shape, dtype str)}, total bytes)."""
    placement, total = {}, 0
    for name, (shape, dtype) in layout.items():
        total = -(-total // _ALIGN) * _ALIGN
        placement[name] = (total, tuple(shape), np.dtype(dtype).str)
        total += int(np.prod(shape)) * np.dtype(dtype).itemsize
    return placement, max(total, 1)


def _map_fd(fd, size):
    """Maps a shared-memory file read-write, prefaulted."""
    return mmap.mmap(fd, size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))


def _arrays_in(memory, placement, total):
    """Arrays of a placement inside a mapping, all views of one fresh base array.

    The base wraps a memoryview, so NumPy stops collapsing view chains at it: it stays alive
    exactly as long as any returned array does (a weakref.finalize on it says when). Returns
    (base, {name: array})."""
    base = np.frombuffer(memoryview(memory)[:total], dtype=np.uint8)
    arrays = {}
    for name, (offset, shape, dtype) in placement.items():
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        arrays[name] = base[offset:offset + nbytes].view(dtype).reshape(shape)
    return base, arrays


class _WorkerSlots:
    """A worker's shared-memory slots: {slot id: (fd, size, mapping)} and the free ids."""

    def __init__(self):
        self.slots, self.free, self.announced = {}, set(), set()

    def acquire(self, size):
        """Id of a free slot that fits (the smallest), or of a new one."""
        fitting = [i for i in self.free if self.slots[i][1] >= size]
        if fitting:
            slot_id = min(fitting, key=lambda i: self.slots[i][1])
            self.free.discard(slot_id)
            return slot_id
        slot_id = len(self.slots)
        fd = os.memfd_create(f"simpledet-batch-{slot_id}", os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        self.slots[slot_id] = (fd, size, _map_fd(fd, size))
        return slot_id


def _worker_main(pipeline, worker_id, task_conn, result_conn):
    """A worker process: builds the batches it is sent, in order, until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    cv2.setNumThreads(1)  # parallelism comes from the workers, not from OpenCV's pool
    parent = os.getppid()
    slots = _WorkerSlots()
    while True:
        if not task_conn.poll(1.0):
            if os.getppid() != parent:  # our parent died; do not linger as an orphan
                return
            continue
        try:
            task = task_conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        token, indices, valid, seed_key, released = task
        slots.free.update(released)
        new_fd = None
        try:
            if _SHARED_MEMORY:
                placement, total = _shared_layout(pipeline.batch_layout(indices))
                slot_id = slots.acquire(total)
                try:
                    _, arrays = _arrays_in(slots.slots[slot_id][2], placement, total)
                    built, meta = pipeline.build_batch(indices, valid, seed_key, batch=arrays)
                except BaseException:
                    slots.free.add(slot_id)
                    raise
                finally:
                    arrays = None
                if built is None:  # every image skipped
                    slots.free.add(slot_id)
                    message = (token, "skipped", None, meta)
                else:
                    if slot_id not in slots.announced:  # the consumer maps it once
                        new_fd = slots.slots[slot_id][0]
                        slots.announced.add(slot_id)
                    message = (token, "shared",
                               (slot_id, new_fd is not None, placement, total), meta)
            else:
                batch, meta = pipeline.build_batch(indices, valid, seed_key)
                message = (token, "ok" if batch is not None else "skipped", batch, meta)
        except Exception as err:  # reported to the consumer, which raises it
            message = (token, "error", (str(err), f"(loader worker {worker_id} traceback)\n"
                                                  f"{traceback.format_exc()}"), None)
        try:
            result_conn.send(message)
            if message[1] == "shared" and new_fd is not None:
                reduction.send_handle(result_conn, new_fd, None)
        except (BrokenPipeError, OSError):
            return


def _describe_exit(exitcode):
    if exitcode is None:
        return "is not responding"
    if exitcode < 0:
        try:
            return f"was killed by signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class _WorkerPool:
    """Worker processes with one task pipe and one result pipe each."""

    def __init__(self, pipeline, num_workers, start_method):
        ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            # Workers fork from a server that already imported the loader (and the main
            # script, which children then need not re-run): a fast start.
            ctx.set_forkserver_preload(["__main__", "simpledet.data.loader"])
        self.processes, self.task_conns, self.result_conns = [], [], []
        self.slot_maps = {}  # (worker id, slot id) -> mapping of the worker's slot
        self.released = [collections.deque() for _ in range(num_workers)]
        try:
            for worker_id in range(num_workers):
                task_recv, task_send = ctx.Pipe(duplex=False)
                result_recv, result_send = ctx.Pipe(duplex=True)  # a socket: passes fds
                process = ctx.Process(target=_worker_main, name=f"simpledet-loader-{worker_id}",
                                      args=(pipeline, worker_id, task_recv, result_send),
                                      daemon=True)
                process.start()
                # Keep only our ends: a worker's death then closes its result pipe (EOF).
                task_recv.close()
                result_send.close()
                self.processes.append(process)
                self.task_conns.append(task_send)
                self.result_conns.append(result_recv)
        except BaseException:
            self.close()
            raise

    @property
    def pids(self):
        return [p.pid for p in self.processes]

    @property
    def num_slots(self):
        return len(self.slot_maps)

    def submit(self, worker_id, task):
        """Sends (token, indices, valid, seed_key) plus the slots freed since the last task."""
        released = []
        while self.released[worker_id]:
            released.append(self.released[worker_id].popleft())
        try:
            self.task_conns[worker_id].send((*task, released))
        except (BrokenPipeError, OSError):
            self._raise_dead(worker_id)

    def receive(self, worker_id, timeout, what, token):
        """Next message (token, status, payload, meta) from a worker, a shared-memory batch
        turned into arrays when it belongs to `token` (else its slot is released at once).

        Raises WorkerDiedError if the worker dies or exceeds timeout."""
        conn, process = self.result_conns[worker_id], self.processes[worker_id]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ready = mp_connection.wait([conn, process.sentinel], timeout=1.0)
            if conn in ready:
                try:
                    message = conn.recv()
                    if message[1] != "shared":
                        return message
                    got_token, _, (slot_id, is_new, placement, total), meta = message
                    if is_new:
                        fd = reduction.recv_handle(conn)
                        try:
                            self.slot_maps[worker_id, slot_id] = _map_fd(fd, total)
                        finally:
                            os.close(fd)
                except (EOFError, OSError, RuntimeError):
                    self._raise_dead(worker_id, what)
                if got_token != token:
                    self.released[worker_id].append(slot_id)
                    return got_token, "ok", None, meta
                base, batch = _arrays_in(self.slot_maps[worker_id, slot_id], placement, total)
                weakref.finalize(base, self.released[worker_id].append, slot_id)
                return got_token, "ok", batch, meta
            if ready or not process.is_alive():
                self._raise_dead(worker_id, what)
            if deadline is not None and time.monotonic() > deadline:
                raise WorkerDiedError(f"loader worker {worker_id} (pid {process.pid}) produced "
                                      f"nothing for {timeout:.0f} s while building {what}")

    def _raise_dead(self, worker_id, what="a batch"):
        process = self.processes[worker_id]
        process.join(timeout=1.0)
        raise WorkerDiedError(f"loader worker {worker_id} (pid {process.pid}) "
                              f"{_describe_exit(process.exitcode)} while building {what}")

    def close(self):
        for conn in self.task_conns:
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for conn in self.result_conns:
            # Unblocks workers stuck sending a batch nobody will read.
            conn.close()
        for process in self.processes:
            process.join(timeout=2.0)
            if process.is_alive():
                process.terminate()
                process.join(timeout=2.0)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self.task_conns:
            conn.close()
        for memory in self.slot_maps.values():
            try:
                memory.close()
            except BufferError:
                pass  # the consumer still holds a batch in it; unmapped when that goes
        self.processes, self.task_conns, self.result_conns = [], [], []
        self.slot_maps = {}


def _close_pool(pool_holder):
    if pool_holder[0] is not None:
        pool_holder[0].close()
        pool_holder[0] = None


class DetectionLoader:
    """Iterates over batches of an epoch; the next `for` loop continues with the next epoch.

    Args:
        records: list of record dicts (schema in simpledet.data).
        batch_size: images per batch (per process; B below).
        short_sides: short sides for resizing; training picks one per image at random
            (multi-scale), test mode uses the largest.
        long_side: cap on the long side.
        mean, std: per-channel normalization in RGB order, pixel units.
        flip: random horizontal flip (training only).
        size_divisor: bucket sides are rounded up to a multiple of it.
        assigners: the training targets (simpledet.data.targets, e.g. RpnAnchorAssigner; a
            detector's ``target_assigners``): each declares its arrays per bucket and fills
            them per image, in this order, from the image's random stream; they must pickle
            (worker processes receive them). Ignored in test mode.
        max_gt: gt rows per image; more boxes are truncated (counted in `truncated_gt`).
            What assigners leave out (e.g. crowd regions beyond their rows) is counted in
            `target_counts` {counter: total} and warned about once per counter.
        num_workers: worker processes; 0 builds batches in this process.
        prefetch: batches requested ahead of the consumer (at least num_workers).
        shuffle: reshuffle each epoch (training).
        seed: seeds the plan and every batch's randomness.
        rank, num_parts: this process takes batches rank, rank + num_parts, ... of the global
            plan; in training the plan is padded so every part gets the same count.
        for_training: False = test mode: no flip, no anchor targets, no shuffle, every record
            exactly once (padding slots repeat a record and have valid=False).
        skip_bad_images: replace unreadable images by another image of the batch with
            valid=False (recorded in `bad_images`, logged once per file) instead of raising;
            a batch with no readable image is left out.
        start_method: multiprocessing start method of the workers.
        timeout: seconds a live worker may take over one batch before WorkerDiedError (None:
            no limit; a dead worker is detected within a second either way).

    Batches are dicts of NumPy arrays: data (B, 3, Hb, Wb) float32, im_info (B, 3)
    [h, w, scale], gt_boxes (B, max_gt, 5) [x1, y1, x2, y2, class] padded with -1 rows,
    image_ids (B,) int64, valid (B,) bool and, in training, each assigner's arrays (B, *shape)
    (simpledet.data.layout). Records keep their crowd regions (ignore regions for the
    assigners) and segmentations.
    """

    def __init__(self, records, *, batch_size, short_sides, long_side, mean, std, flip=True,
                 size_divisor=32, assigners=(), max_gt=100, num_workers=2, prefetch=4,
                 shuffle=True, seed=0, rank=0, num_parts=1, for_training=True,
                 skip_bad_images=False, start_method="forkserver", timeout=300.0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_parts:
            raise ValueError(f"rank must be in [0, num_parts={num_parts}), got {rank}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if not short_sides:
            raise ValueError("short_sides is empty")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean and std need 3 values (RGB), got {mean} and {std}")
        assigners = tuple(assigners or ())
        for assigner in assigners:
            if not (callable(getattr(assigner, "outputs", None))
                    and callable(getattr(assigner, "assign", None))):
                raise TypeError(f"{assigner!r} is not a target assigner (outputs(bucket_h, "
                                "bucket_w) and assign(sample, rng, out); see "
                                "simpledet.data.targets)")
            if num_workers > 0:
                try:
                    pickle.dumps(assigner)
                except Exception as err:
                    raise TypeError(f"{assigner!r} does not pickle, so worker processes cannot "
                                    f"receive it: {err}") from None
        if not records:
            raise ValueError("no records to load")
        compact = [_compact_record(r, i) for i, r in enumerate(records)]
        self._pipeline = _Pipeline(
            compact, short_sides=short_sides, long_side=long_side, mean=mean, std=std, flip=flip,
            size_divisor=size_divisor, assigners=assigners, max_gt=max_gt,
            for_training=for_training, skip_bad_images=skip_bad_images)
        self._landscape = np.array([is_landscape(r["height"], r["width"]) for r in compact])
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.prefetch = max(int(prefetch), self.num_workers, 1)
        self.shuffle = bool(shuffle) and for_training
        self.seed = int(seed)
        self.rank, self.num_parts = int(rank), int(num_parts)
        self.for_training = bool(for_training)
        self.start_method = start_method
        self.timeout = timeout
        self.bad_images = []  # (file name, reason) of each skip (an image once per epoch)
        self._warned_bad = set()
        self.truncated_gt = 0  # gt boxes beyond max_gt, summed over batches
        # What the assigners left out (e.g. "truncated_crowd"), summed over batches.
        self.target_counts = collections.Counter()
        self._epoch, self._batch_index = 0, 0
        self._token = 0
        self._pool_holder = [None]
        self._finalizer = weakref.finalize(self, _close_pool, self._pool_holder)
        self._num_batches = len(self._plan(0))

    # ---- position -----------------------------------------------------------------------
    @property
    def epoch(self):
        return self._epoch

    @property
    def batch_index(self):
        """Index (within the epoch, for this rank) of the next batch to be yielded."""
        return self._batch_index

    def __len__(self):
        return self._num_batches

    def state_dict(self):
        """The position to resume from: the next batch to be yielded."""
        return {"epoch": self._epoch, "batch_index": self._batch_index, "seed": self.seed,
                "num_records": len(self._pipeline.records), "num_parts": self.num_parts,
                "batch_size": self.batch_size}

    def load_state_dict(self, state):
        for key in ("seed", "num_records", "num_parts", "batch_size"):
            mine = self.state_dict()[key]
            if key in state and state[key] != mine:
                raise ValueError(f"loader state: {key}={state[key]} was saved but this loader has "
                                 f"{key}={mine}; resuming would replay different batches")
        if not 0 <= int(state["batch_index"]) <= len(self):
            raise ValueError(f"loader state: batch_index={state['batch_index']} outside "
                             f"[0, {len(self)}]")
        self._epoch, self._batch_index = int(state["epoch"]), int(state["batch_index"])

    # ---- the plan -----------------------------------------------------------------------
    def _plan(self, epoch):
        """This rank's batches of an epoch: [(global index, record indices, valid flags)]."""
        num = len(self._landscape)
        rng = np.random.default_rng([self.seed, epoch, _PLAN_STREAM])
        order = rng.permutation(num) if self.shuffle else np.arange(num)
        rank_of = np.empty(num, dtype=np.int64)
        rank_of[order] = np.arange(num)
        batches = []
        for group in (order[self._landscape[order]], order[~self._landscape[order]]):
            if len(group) == 0:
                continue
            remainder = -len(group) % self.batch_size
            if self.for_training:
                # Wrap around the (shuffled) group: every image is seen each epoch.
                padded = np.concatenate([group, np.resize(group, remainder)])
                valid = np.ones(len(padded), dtype=bool)
            else:
                padded = np.concatenate([group, np.repeat(group[-1:], remainder)])
                valid = np.arange(len(padded)) < len(group)
            for start in range(0, len(padded), self.batch_size):
                stop = start + self.batch_size
                batches.append((tuple(int(i) for i in padded[start:stop]),
                                tuple(bool(v) for v in valid[start:stop])))
        # Interleave the two buckets in the order their first images were drawn.
        batches.sort(key=lambda b: rank_of[b[0][0]])
        if self.for_training and len(batches) % self.num_parts:
            # Equal step counts on every part, or distributed training would deadlock.
            batches += batches[:self.num_parts - len(batches) % self.num_parts]
        return [(g, idx, val) for g, (idx, val) in enumerate(batches)
                if g % self.num_parts == self.rank]

    def plan(self, epoch):
        """Record indices of this rank's batches in an epoch (for inspection and tests)."""
        return [indices for _, indices, _ in self._plan(epoch)]

    # ---- iteration ----------------------------------------------------------------------
    def __iter__(self):
        if self._batch_index >= len(self):
            self._epoch, self._batch_index = self._epoch + 1, 0
        self._token += 1
        token, epoch = self._token, self._epoch
        plan = self._plan(epoch)
        batches = (self._iter_inline(plan, epoch) if self.num_workers == 0
                   else self._iter_workers(plan, epoch, token))
        whole_epoch, skips_before, yielded = self._batch_index == 0, len(self.bad_images), 0
        for position, batch in batches:
            if token != self._token:
                raise LoaderError("this iteration was superseded by a newer iter(loader)")
            self._batch_index = position + 1
            yielded += 1
            yield batch
        if whole_epoch and not yielded and len(self.bad_images) > skips_before:
            file_name, reason = self.bad_images[-1]
            raise LoaderError(f"every image of epoch {epoch} was skipped as unreadable "
                              f"(input.skip_bad_images), e.g. {file_name}: {reason}")
        if token == self._token:
            self._epoch, self._batch_index = epoch + 1, 0

    def _seed_key(self, epoch, global_index):
        return (self.seed, epoch, _BATCH_STREAM, global_index)

    def _account(self, meta):
        self.truncated_gt += meta["truncated_gt"]
        for counter, count in meta["target_counts"].items():
            if count and not self.target_counts[counter]:  # once per counter
                logger.warning("loader targets: %d %s in one batch (%s); the total is counted in "
                               "loader.target_counts[%r]", count, counter,
                               self._counter_text(counter), counter)
            self.target_counts[counter] += count
        for file_name, image_id, reason in meta["bad_images"]:
            if file_name not in self._warned_bad:  # once, not every epoch
                self._warned_bad.add(file_name)
                logger.warning("skipped unreadable image %s (image_id %d): %s", file_name,
                               image_id, reason)
            self.bad_images.append((file_name, reason))

    def _counter_text(self, counter):
        """The description an assigner gives of one of its counters."""
        for assigner in self._pipeline.assigners:
            text = getattr(assigner, "counters", {}).get(counter)
            if text:
                return text
        return "reported by a target assigner"

    def _iter_inline(self, plan, epoch):
        for position in range(self._batch_index, len(plan)):
            global_index, indices, valid = plan[position]
            batch, meta = self._pipeline.build_batch(indices, valid,
                                                     self._seed_key(epoch, global_index))
            self._account(meta)
            if batch is not None:
                yield position, batch

    def _pool(self):
        if self._pool_holder[0] is None:
            self._pool_holder[0] = _WorkerPool(self._pipeline, self.num_workers,
                                               self.start_method)
        return self._pool_holder[0]

    @property
    def worker_pids(self):
        """Process ids of the live worker pool (empty before the first iteration)."""
        pool = self._pool_holder[0]
        return [] if pool is None else pool.pids

    def _iter_workers(self, plan, epoch, token):
        pool = self._pool()
        start = self._batch_index
        next_submit = start

        def submit_until(limit):
            nonlocal next_submit
            while next_submit < min(limit, len(plan)):
                global_index, indices, valid = plan[next_submit]
                pool.submit((next_submit - start) % self.num_workers,
                            (token, indices, valid, self._seed_key(epoch, global_index)))
                next_submit += 1

        try:
            for position in range(start, len(plan)):
                submit_until(position + self.prefetch)
                worker_id = (position - start) % self.num_workers
                files = ", ".join(self._pipeline.records[i]["file_name"]
                                  for i in plan[position][1])
                while True:  # skip answers to an abandoned earlier iteration
                    got_token, status, payload, meta = pool.receive(
                        worker_id, self.timeout, f"batch {position} of epoch {epoch} ({files})",
                        token)
                    if got_token == token:
                        break
                if status == "error":
                    message, worker_traceback = payload
                    raise LoaderError(message, worker_traceback)
                self._account(meta)
                if status != "skipped":
                    yield position, payload
        except WorkerDiedError:
            _close_pool(self._pool_holder)  # the next iteration starts a fresh pool
            raise

    # ---- lifetime -----------------------------------------------------------------------
    def close(self):
        """Stops the worker processes (idempotent); the loader can be iterated again later."""
        _close_pool(self._pool_holder)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
