"""The device memory record: CUDA allocator statistics parsed from a `torch.cuda.memory_stats()`
shaped dict (the real call needs a GPU), and the CPU's record without them."""

import mmap

from lab.memory.measure import PeakMemory, cuda_memory_record

MiB = 2**20


def _stats(allocated, reserved, active, peaks, retries=0, ooms=0):
    """The keys of torch.cuda.memory_stats() the record reads, plus some it must ignore."""
    stats = {"num_alloc_retries": retries, "num_ooms": ooms, "allocation.all.current": 7,
             "allocated_bytes.small_pool.peak": 1, "requested_bytes.all.peak": 3}
    for pool, current in (("allocated", allocated), ("reserved", reserved), ("active", active)):
        stats[f"{pool}_bytes.all.current"] = current
        stats[f"{pool}_bytes.all.peak"] = peaks[pool]
    return stats


def test_cuda_record_is_current_and_peak_above_the_baseline():
    baseline = _stats(10 * MiB, 20 * MiB, 10 * MiB, {"allocated": 10 * MiB, "reserved": 20 * MiB, "active": 10 * MiB},
                      retries=1)
    now = _stats(110 * MiB, 220 * MiB, 112 * MiB,
                 {"allocated": 510 * MiB, "reserved": 620 * MiB, "active": 515 * MiB}, retries=3, ooms=0)
    record = cuda_memory_record(baseline, now)
    assert record["device"] == "cuda" and record["unit"] == "bytes"
    assert record["baseline_allocated"] == 10 * MiB and record["current_allocated"] == 110 * MiB
    assert record["current_allocated_above_baseline"] == 100 * MiB
    assert record["peak_allocated_above_baseline"] == 500 * MiB
    assert record["peak_reserved_above_baseline"] == 600 * MiB
    assert record["peak_active_above_baseline"] == 505 * MiB
    assert record["current_reserved_above_baseline"] == 200 * MiB
    assert record["alloc_retries"] == 2 and record["ooms"] == 0
    assert not any("small_pool" in key or "requested" in key for key in record)


def test_cuda_record_of_an_empty_allocator_is_zero():
    record = cuda_memory_record({}, {})
    assert all(v == 0 for k, v in record.items() if k not in ("device", "unit"))


def test_cpu_record_has_no_cuda_pools_and_says_so():
    peak = PeakMemory("cpu")
    # Fresh pages from the kernel, written so they are resident: a Python bytes object could reuse heap
    # pages an earlier test freed (a pytest-xdist worker runs many), which would not raise the peak.
    buffer = mmap.mmap(-1, 64 * MiB)
    buffer.write(b"\x01" * (64 * MiB))
    record = peak.read()
    buffer.close()
    assert record["device"] == "cpu" and record["peak_rss_above_baseline"] >= 60 * MiB
    assert not any(pool in key for key in record for pool in ("allocated", "reserved", "active"))
    assert any("no CUDA allocator statistics" in note for note in record["notes"])
