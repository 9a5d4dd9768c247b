"""Where the stdout/stderr of each run's steps go: files the Dagster UI shows, and nothing else.

Dagster's ``LocalComputeLogManager`` also mirrors the captured files back to the process's own stdout/stderr, which
costs four processes per run (``tail -F`` for each stream and a Python watcher for each tail: ~0.1 s of CPU per
run, as much as a short check). Nobody reads that copy here: a run launched by the daemon has no terminal, and
``heygem run`` prints its own progress and failures. So this manager writes the same files, in the same place and
layout (the UI's stdout/stderr tabs read them as before), and mirrors nothing.

Configured in ``dagster.yaml`` (``compute_logs``); imported only by Dagster's instance loading, never by the engine.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Generator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dagster import Field, StringSource
from dagster._core.execution.compute_logs import redirect_to_file
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.local_compute_log_manager import IO_TYPE_EXTENSION, LocalComputeLogManager
from dagster._serdes import ConfigurableClassData
from dagster._utils import ensure_file, touch_file


class FileComputeLogManager(LocalComputeLogManager):
    """``LocalComputeLogManager`` without the mirroring of captured output back to the terminal.

    ``base_dir`` defaults to ``$DAGSTER_HOME/storage``, where Dagster's default manager keeps them (a yaml file
    cannot build that path itself).
    """

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {**super().config_type(), "base_dir": Field(StringSource, is_required=False)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None,
                          config_value: Mapping[str, Any]) -> FileComputeLogManager:
        config = dict(config_value)
        config.setdefault("base_dir", os.path.join(os.environ["DAGSTER_HOME"], "storage"))
        return cls(inst_data=inst_data, **config)  # the parent builds its own class, not ``cls``

    @contextmanager
    def capture_logs(self, log_key: Sequence[str]) -> Generator[CapturedLogContext, None, None]:
        stdout_path = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDOUT])
        stderr_path = self.get_captured_local_path(log_key, IO_TYPE_EXTENSION[ComputeIOType.STDERR])
        ensure_file(stdout_path)
        ensure_file(stderr_path)
        # File-descriptor level, like Dagster's own capture: output of ffmpeg and native libraries is kept too.
        with redirect_to_file(sys.stdout, stdout_path), redirect_to_file(sys.stderr, stderr_path):
            yield CapturedLogContext(log_key)
        touch_file(self.complete_artifact_path(log_key))  # tells the UI the capture is complete
