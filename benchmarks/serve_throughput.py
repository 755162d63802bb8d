"""``prokd serve`` under a burst, against a real Orthanc, beside ``prokd predict`` on the same
studies.

``--studies`` phantom studies (SiteA cases, 256x256x28, each its own patient) are written
as DICOM and uploaded to an Orthanc started on loopback ports (Debian package ``orthanc``).
Each repeat runs, in turn:

- ``predict``: ``prokd predict prostate-t2 STUDIES OUT --output-format dicom-seg``, one
  process segmenting the studies one after the other (wall time, process start included);
- ``node``: a fresh ``prokd serve`` (``--quiet-seconds``, one worker) and Orthanc asked to
  send every study at once (one asynchronous REST job each); timed from the first request
  to the last SEG delivered. Latency per study: last instance received to SEG stored in
  Orthanc (the node's status file: ``received`` and ``delivered_at``);
- ``single``: one study sent alone to a fresh node, received to SEG in Orthanc;
- ``sigkill`` (once, after the repeats): the same burst, the node SIGKILLed after its first
  delivery and restarted, Orthanc's failed sends resubmitted (a PACS retries), and every
  study's SEG count in Orthanc checked.

Throughput is studies per minute; the ratio node / predict is taken within each repeat and
its median reported. Targets (issue 32): every study exactly one SEG, nothing lost or
duplicated, after a SIGKILL too; node throughput within 20% of predict's; received to SEG
at most the quiet period + 3 s.

    .venv/bin/python benchmarks/serve_throughput.py --out benchmarks/results/serve_throughput
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ helpers: Orthanc

from prokd.data.dicom_write import StudyIdentity, write_series  # noqa: E402
from prokd.evaluation.bench import cpu_model  # noqa: E402
from prokd.io_atomic import write_json_and_markdown  # noqa: E402
from tests.conftest import phantom_volume  # noqa: E402
from tests.serve.orthanc import ORTHANC_AET, Orthanc, free_port  # noqa: E402

PROKD = str(Path(sys.executable).with_name("prokd"))
TIMEOUT_S = 600


def _write_studies(root: Path, count: int) -> list[Path]:
    folders = []
    for i in range(count):
        image, _ = phantom_volume(i)
        folder = root / f"BENCH-{i:02d}"
        write_series(image, folder / "t2", StudyIdentity.named(f"BENCH-{i:02d}"))
        folders.append(folder)
    return folders


def _predict_seconds(studies: Path, out: Path) -> float:
    start = time.perf_counter()
    command = [PROKD, "predict", "prostate-t2", str(studies), str(out)]
    subprocess.run(
        [*command, "--output-format", "dicom-seg", "--overwrite"],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


class _Node:
    def __init__(
        self, work: Path, port: int, orthanc: Orthanc, quiet: float, workers: int = 1
    ) -> None:
        self.work, self.log = work, work.parent / f"{work.name}.log"
        destination = f"{ORTHANC_AET}@127.0.0.1:{orthanc.dicom_port}"
        self.argv = [PROKD, "serve", "--port", str(port), "--bind", "127.0.0.1"]
        self.argv += ["--work-dir", str(work), "--destination", destination]
        self.argv += ["--quiet-seconds", str(quiet), "--workers", str(workers)]

    def start(self) -> _Node:
        self.process = subprocess.Popen(self.argv, stderr=open(self.log, "ab"))  # noqa: SIM115
        deadline = time.monotonic() + 60
        while "listening as" not in self.log.read_text():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(self.log.read_text())
            time.sleep(0.1)
        return self

    def status(self) -> dict:
        path = self.work / "status.json"
        return json.loads(path.read_text()) if path.exists() else {"counts": {}, "studies": {}}

    def wait_done(self, count: int) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            status = self.status()
            if status["counts"].get("done", 0) + status["counts"].get("failed", 0) >= count:
                return status
            time.sleep(0.1)
        raise RuntimeError(f"the node did not finish: {self.log.read_text()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            self.process.wait(60)


def _send_all(orthanc: Orthanc, studies: list[str]) -> float:
    """Ask Orthanc to send every study at once (asynchronous jobs); when the first request
    left."""
    start = time.time()
    for study in studies:
        orthanc.post("/modalities/prokd/store", {"Resources": [study], "Asynchronous": True})
    return start


def _node_burst(
    tmp: Path, orthanc: Orthanc, port: int, studies: list[str], quiet: float, workers: int
):
    node = _Node(tmp / f"work-{time.time_ns()}", port, orthanc, quiet, workers).start()
    try:
        sent = _send_all(orthanc, studies)
        status = node.wait_done(len(studies))
    finally:
        node.stop()
    rows = list(status["studies"].values())
    end = max(max(r["delivered_at"].values()) for r in rows)
    latencies = [max(r["delivered_at"].values()) - r["received"] for r in rows]
    return {
        "seconds": end - sent,
        "failed": status["counts"].get("failed", 0),
        "latency_median_s": statistics.median(latencies),
        "latency_max_s": max(latencies),
    }


def _single_latency(tmp: Path, orthanc: Orthanc, port: int, study: str, quiet: float) -> float:
    """One study sent alone to a fresh node: last instance received to SEG in Orthanc."""
    node = _Node(tmp / f"work-single-{time.time_ns()}", port, orthanc, quiet).start()
    try:
        _send_all(orthanc, [study])
        (row,) = node.wait_done(1)["studies"].values()
    finally:
        node.stop()
    return max(row["delivered_at"].values()) - row["received"]


def _resend_failed(orthanc: Orthanc, resent: set[str]) -> None:
    """Resubmit Orthanc's send jobs that failed and were not resubmitted yet, as a PACS
    retries a send the receiving node cut short."""
    for job_id in orthanc.get("/jobs"):
        job = orthanc.get(f"/jobs/{job_id}")
        if job.get("Type") == "DicomModalityStore" and job["State"] == "Failure":
            if job_id not in resent:
                resent.add(job_id)
                orthanc.post(f"/jobs/{job_id}/resubmit", {})


def _sigkill_burst(tmp: Path, orthanc: Orthanc, port: int, studies: list[str], quiet: float):
    work = tmp / "work-sigkill"
    node = _Node(work, port, orthanc, quiet).start()
    _send_all(orthanc, studies)
    deadline = time.monotonic() + TIMEOUT_S
    while "sent 1 object(s)" not in node.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    delivered_before = node.status()["counts"].get("done", 0)
    node.stop(signal.SIGKILL)
    restarted = _Node(work, port, orthanc, quiet).start()
    resent: set[str] = set()
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            _resend_failed(orthanc, resent)
            status = restarted.status()["counts"]
            if status.get("done", 0) + status.get("failed", 0) >= len(studies):
                break
            time.sleep(0.2)
        restarted.wait_done(len(studies))
    finally:
        restarted.stop()
    time.sleep(2)  # anything delivered twice shows in Orthanc by now
    counts = [len(orthanc.instances_of_modality(s, "SEG")) for s in studies]
    return {
        "done_before_kill": delivered_before,
        "sends_resubmitted": len(resent),
        "segs_per_study": counts,
    }


def _delete_results(orthanc: Orthanc, studies: list[str]) -> None:
    for study in studies:
        for series in orthanc.series_of_modality(study, "SEG"):
            orthanc._request("DELETE", f"/series/{series['ID']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20, help="studies in the burst")
    parser.add_argument("--repeats", type=int, default=3, help="predict/node pairs")
    parser.add_argument("--quiet-seconds", type=float, default=2.0, help="the node's quiet time")
    parser.add_argument("--workers", type=int, default=1, help="the node's workers in the burst")
    parser.add_argument("--out", default="benchmarks/results/serve_throughput", help="stem")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        folders = _write_studies(tmp / "studies", args.studies)
        port = free_port()
        orthanc = Orthanc(tmp / "orthanc", port).start()
        try:
            studies = [orthanc.upload(sorted((f / "t2").glob("*.dcm"))) for f in folders]
            repeats = []
            for _ in range(args.repeats):
                predict_s = _predict_seconds(tmp / "studies", tmp / "predicted")
                node = _node_burst(tmp, orthanc, port, studies, args.quiet_seconds, args.workers)
                segs = [len(orthanc.instances_of_modality(s, "SEG")) for s in studies]
                _delete_results(orthanc, studies)
                single = _single_latency(tmp, orthanc, port, studies[0], args.quiet_seconds)
                _delete_results(orthanc, studies[:1])
                repeats.append(
                    {"predict_s": predict_s, **node, "segs_per_study": segs, "single_s": single}
                )
            sigkill = _sigkill_burst(tmp, orthanc, port, studies, args.quiet_seconds)
        finally:
            orthanc.stop()
    per_minute = [
        (args.studies * 60 / r["predict_s"], args.studies * 60 / r["seconds"]) for r in repeats
    ]
    result = {
        "command": " ".join(["python", "benchmarks/serve_throughput.py", *sys.argv[1:]]),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "seconds": time.perf_counter() - started,
        "studies": args.studies,
        "quiet_seconds": args.quiet_seconds,
        "workers": args.workers,
        "repeats": repeats,
        "predict_per_minute_median": statistics.median(p for p, _ in per_minute),
        "node_per_minute_median": statistics.median(n for _, n in per_minute),
        "node_over_predict_median": statistics.median(n / p for p, n in per_minute),
        "latency_median_s": statistics.median(r["latency_median_s"] for r in repeats),
        "latency_max_s": max(r["latency_max_s"] for r in repeats),
        "single_latency_median_s": statistics.median(r["single_s"] for r in repeats),
        "one_seg_per_study": all(r["segs_per_study"] == [1] * args.studies for r in repeats),
        "sigkill": sigkill,
        "sigkill_one_seg_per_study": sigkill["segs_per_study"] == [1] * args.studies,
    }
    write_json_and_markdown(args.out, result, _markdown(result, per_minute))
    print(_markdown(result, per_minute))


def _markdown(result: dict, per_minute: list[tuple[float, float]]) -> str:
    quiet = result["quiet_seconds"]
    lines = [
        "# `prokd serve`: a burst of studies from Orthanc, beside `prokd predict`",
        "",
        f"Made by `{result['command']}` on {result['machine']} in {result['seconds']:.0f} s. "
        f"{result['studies']} phantom studies (256x256x28 each, one axial T2 series) sent by "
        "a real Orthanc (Debian package) all at once to a fresh `prokd serve` (one worker, "
        f"quiet period {quiet:g} s), SEG out; `prokd predict` segments the same studies one "
        "after the other in one process (SEG out, process start included). Node time: first "
        "send request to last SEG stored in Orthanc. Latency: a study's last instance "
        "received to its SEG stored in Orthanc.",
        "",
        "| repeat | predict s | node s | predict studies/min | node studies/min | node / predict "
        "| burst latency median s | burst latency max s | one study alone s | one SEG per study |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for i, (row, (p, n)) in enumerate(zip(result["repeats"], per_minute, strict=True), 1):
        one = row["segs_per_study"] == [1] * result["studies"]
        lines.append(
            f"| {i} | {row['predict_s']:.1f} | {row['seconds']:.1f} | {p:.1f} | {n:.1f} | "
            f"{n / p:.2f} | {row['latency_median_s']:.2f} | {row['latency_max_s']:.2f} | "
            f"{row['single_s']:.2f} | {one} |"
        )
    sigkill = result["sigkill"]
    lines += [
        "",
        f"Medians: predict {result['predict_per_minute_median']:.1f} studies/min, node "
        f"{result['node_per_minute_median']:.1f}; node / predict "
        f"{result['node_over_predict_median']:.2f} (target >= 0.80). One study sent alone: "
        f"received to SEG in Orthanc {result['single_latency_median_s']:.2f} s (median; "
        f"target <= quiet + 3 = {quiet + 3:g} s). In the burst a study also waits for the "
        f"ones before it: latency median {result['latency_median_s']:.2f} s, max "
        f"{result['latency_max_s']:.2f} s.",
        "",
        f"SIGKILL during a burst: the node was killed as soon as its log said it had sent "
        f"its first SEG ({sigkill['done_before_kill']} study(ies) marked done in its status "
        "file then) and restarted on the same work folder; Orthanc's sends that failed "
        f"meanwhile were resubmitted, as a PACS retries ({sigkill['sends_resubmitted']}); "
        f"SEGs per study in Orthanc afterwards: {sigkill['segs_per_study']} "
        f"(exactly one each: {result['sigkill_one_seg_per_study']}).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
