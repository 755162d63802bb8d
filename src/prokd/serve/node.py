"""``prokd serve``: a DICOM node that a PACS or a scanner sends studies to (pynetdicom).

Received MR instances are written to the work folder before the C-STORE is acknowledged.
Other storage objects (a SEG, an SR, a prokd result sent back with its study) are
acknowledged and skipped with a log line, so that a PACS sending a whole study sees no
failure; services other than storage and verification are refused at association.
A study that has been quiet for ``quiet_seconds`` goes to a pool of ``workers`` that run
:func:`~prokd.serve.process.process_study` (the pipeline of ``prokd predict``) and send the
results to every destination, retrying with a doubling back-off. The work folder is the
queue: a restarted node (after a kill too) processes and delivers whatever was received and
not yet delivered, and nothing twice (:mod:`prokd.serve.store`). One log line per event:
received, processed, sent, failed, skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from pydicom.uid import UID, EnhancedMRImageStorage, MRImageStorage
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

from prokd.data.dicom import READABLE_TRANSFER_SYNTAXES
from prokd.errors import ProkdError
from prokd.inference.model_files import LoadedModel
from prokd.serve.config import NodeConfig
from prokd.serve.process import outcome_of, process_study
from prokd.serve.send import DeliveryError, send_files
from prokd.serve.store import StudyState, WorkFolder, is_uid

log = logging.getLogger("prokd.serve")

MR_STORAGE = (MRImageStorage, EnhancedMRImageStorage)
CANNOT_UNDERSTAND = 0xC210
OUT_OF_RESOURCES = 0xA700
TICK_SECONDS = 0.2


def _sop_name(uid: str) -> str:
    name = UID(uid).name
    return name if name != uid else f"SOP class {uid}"


class Node:
    """The DICOM node: :meth:`start` listens, :meth:`run` schedules until :meth:`stop`."""

    def __init__(self, config: NodeConfig, model: LoadedModel) -> None:
        self.config = config
        self.model = model
        self.work = WorkFolder(config.work_dir)
        self.lock = threading.Lock()
        self.states: dict[str, StudyState] = {}
        self.pending: dict[str, float] = {}  # quiet since (Unix seconds), by study
        self.retry_at: dict[str, float] = {}
        self.active: set[str] = set()
        self.arrivals: dict[int, Counter] = defaultdict(Counter)  # by association
        self.skipped: dict[int, Counter] = defaultdict(Counter)  # by association
        self.stopping = threading.Event()
        self.pool = ThreadPoolExecutor(config.workers, thread_name_prefix="prokd-study")
        self.server = None

    # -- receiving ---------------------------------------------------------------------

    def _application_entity(self) -> AE:
        ae = AE(ae_title=self.config.ae_title)
        ae.add_supported_context(Verification)
        for context in StoragePresentationContexts:
            syntaxes = list(context.transfer_syntax)
            if context.abstract_syntax in MR_STORAGE:
                syntaxes += [s for s in READABLE_TRANSFER_SYNTAXES if s not in syntaxes]
            ae.add_supported_context(context.abstract_syntax, syntaxes)
        if self.config.allow:
            ae.require_calling_aet = list(self.config.allow)
        return ae

    def _on_store(self, event: evt.Event) -> int:
        """One C-STORE: an MR image is written to the work folder, then acknowledged; any
        other object is acknowledged and skipped."""
        sop_class = str(event.request.AffectedSOPClassUID)
        try:
            dataset = event.dataset
            study_uid = str(dataset.get("StudyInstanceUID", ""))
            sop_uid = str(event.request.AffectedSOPInstanceUID)
        except Exception:  # noqa: BLE001 - a peer's undecodable dataset must not stop us
            self.skipped[id(event.assoc)]["?", "a dataset that cannot be decoded"] += 1
            return CANNOT_UNDERSTAND
        if sop_class not in MR_STORAGE:
            self.skipped[id(event.assoc)][
                study_uid, f"{_sop_name(sop_class)}: not an MR image"
            ] += 1
            return 0x0000
        if not (is_uid(study_uid) and is_uid(sop_uid)):
            self.skipped[id(event.assoc)][study_uid or "?", "no valid study or instance UID"] += 1
            return CANNOT_UNDERSTAND
        try:
            self.work.store_instance(study_uid, sop_uid, event.encoded_dataset())
        except ProkdError as err:
            log.error("study %s: cannot store an instance (%s)", study_uid, err)
            return OUT_OF_RESOURCES
        with self.lock:
            self.pending[study_uid] = time.time()
            state = self.states.setdefault(study_uid, StudyState(study_uid))
            state.patient_id = str(dataset.get("PatientID", ""))
            if study_uid not in self.active:
                state.state = "queued"
        self.arrivals[id(event.assoc)][study_uid] += 1
        return 0x0000

    def _on_association_end(self, event: evt.Event) -> None:
        """One line per study received, and per kind of object skipped, in the association."""
        peer = event.assoc.requestor.ae_title
        for study_uid, count in sorted(self.arrivals.pop(id(event.assoc), {}).items()):
            log.info("received %d instance(s) of study %s from %s", count, study_uid, peer)
        for (study_uid, what), count in sorted(self.skipped.pop(id(event.assoc), {}).items()):
            log.warning(
                "study %s: skipped %d object(s) from %s (%s)",
                study_uid,
                count,
                peer,
                what,
            )
        self._write_status()

    def start(self) -> None:
        """Sweep the work folder, queue what a previous run left, and start listening."""
        self.work.sweep()
        self._recover()
        handlers = [
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_association_end),
            (evt.EVT_ABORTED, self._on_association_end),
        ]
        ae = self._application_entity()
        self.server = ae.start_server(
            (self.config.bind, self.config.port), block=False, evt_handlers=handlers
        )
        destinations = ", ".join(str(d) for d in self.config.destinations)
        log.info(
            "listening as %s on %s:%d; results (%s) to %s; %d study(ies) queued from before",
            self.config.ae_title,
            self.config.bind,
            self.config.port,
            ",".join(self.config.outputs),
            destinations,
            len(self.pending),
        )

    def _recover(self) -> None:
        """Queue every study received and not delivered, or changed since it was. Each
        waits one quiet period from now: a transfer the stop cut short leaves part of a
        study, which the sender's retry completes within that time."""
        restarted = time.time()
        for study_uid in self.work.study_uids():
            state = self.work.load_state(study_uid)
            self.states[study_uid] = state
            last = self.work.last_received(study_uid)
            if state.state not in ("done", "failed") or last > state.received:
                state.state = "queued"
                self.pending[study_uid] = restarted
        self._write_status()

    # -- scheduling ----------------------------------------------------------------------

    def run(self) -> None:
        """Hand quiet studies and due retries to the workers until :meth:`stop`."""
        while not self.stopping.wait(TICK_SECONDS):
            now = time.time()
            with self.lock:
                quiet = [
                    uid
                    for uid, since in self.pending.items()
                    if now - since >= self.config.quiet_seconds and uid not in self.active
                ]
                retries = [
                    uid
                    for uid, due in self.retry_at.items()
                    if due <= now and uid not in self.active and uid not in self.pending
                ]
                for uid in quiet + retries:
                    self.pending.pop(uid, None)
                    self.retry_at.pop(uid, None)
                    self.active.add(uid)
                    self.pool.submit(self._handle, uid)

    def stop(self) -> None:
        """Stop listening, finish the studies in hand, and return."""
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
        self.pool.shutdown(wait=True)
        log.info("stopped")

    # -- one study -----------------------------------------------------------------------

    def _handle(self, study_uid: str) -> None:
        try:
            self._process_and_deliver(study_uid)
        except Exception as err:  # noqa: BLE001 - one study's failure must not stop the node
            self._fail(study_uid, f"{type(err).__name__}: {err}")
        finally:
            with self.lock:
                self.active.discard(study_uid)
            self._write_status()

    def _process_and_deliver(self, study_uid: str) -> None:
        files = self.work.instances(study_uid)
        digest = self.work.digest(files)
        with self.lock:
            state = self.states.setdefault(study_uid, StudyState(study_uid))
        delivered = all(state.delivered.get(str(d)) == digest for d in self.config.destinations)
        refused = state.failed_digest == digest
        if state.digest == digest and (delivered or refused):
            log.info(
                "study %s: unchanged since it was %s; not processed again",
                study_uid,
                "refused" if refused else "delivered",
            )
            self._set(replace(state, state="failed" if refused else "done"))
            return
        if state.digest != digest:
            received = max(p.stat().st_mtime for p in files)
            state = replace(
                state,
                digest=digest,
                instances=len(files),
                received=received,
                processed=None,
                results=[],
                reason="",
                attempts=0,
            )
        out = self.work.results_dir(study_uid, digest)
        if (out / "qc.json").is_file():
            outcome = outcome_of(out)
        else:
            self._set(replace(state, state="processing"))
            try:
                outcome = process_study(
                    self.model, files[0].parent, out, self.config.outputs, study_uid, digest
                )
            except ProkdError as err:
                reason = getattr(err, "problem", str(err))  # a DataError's path is our folder
                self._fail(study_uid, reason, state)
                return
            verdict = (
                "reliable" if outcome.reliable else "NOT reliable: " + "; ".join(outcome.reasons)
            )
            log.info(
                "processed study %s: %s, %.1f ml, %s, %.1f s",
                study_uid,
                outcome.series,
                outcome.gland_ml,
                verdict,
                outcome.seconds,
            )
        state = replace(
            state,
            state="delivering",
            processed=state.processed or time.time(),
            results=[p.name for p in outcome.files],
        )
        self._set(state)
        self._deliver(state, list(outcome.files))

    def _deliver(self, state: StudyState, files: list) -> None:
        failures = []
        for destination in self.config.destinations:
            key = str(destination)
            if state.delivered.get(key) == state.digest:
                continue
            try:
                send_files(files, destination, self.config.ae_title)
            except DeliveryError as err:
                failures.append(str(err))
                continue
            state.delivered[key] = state.digest
            state.delivered_at[key] = time.time()
            self._set(state)
            log.info("sent %d object(s) of study %s to %s", len(files), state.study_uid, key)
        if not failures:
            self._set(replace(state, state="done", attempts=0))
            return
        attempts = state.attempts + 1
        wait = min(self.config.retry_seconds * 2 ** (attempts - 1), self.config.retry_max_seconds)
        self._set(replace(state, attempts=attempts, reason="; ".join(failures)))
        with self.lock:
            self.retry_at[state.study_uid] = time.time() + wait
        log.warning(
            "study %s: not delivered (%s); retry %d in %.0f s",
            state.study_uid,
            "; ".join(failures),
            attempts,
            wait,
        )

    def _fail(self, study_uid: str, reason: str, state: StudyState | None = None) -> None:
        with self.lock:
            state = state or self.states.setdefault(study_uid, StudyState(study_uid))
        self._set(replace(state, state="failed", reason=reason, failed_digest=state.digest))
        log.warning("study %s: failed: %s", study_uid, reason)

    def _set(self, state: StudyState) -> None:
        """Record a study's new state: in memory, in its ``state.json``, in the status."""
        with self.lock:
            self.states[state.study_uid] = state
        self.work.save_state(state)
        self._write_status()

    def _write_status(self) -> None:
        with self.lock:
            states = list(self.states.values())
            self.work.write_status(states)
