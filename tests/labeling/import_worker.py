"""The admin import's background side in tests: what the embedded broker holds, and a stand-in for the
worker that runs the run_import messages it holds, in this process, in order (a real worker process runs
in test_import_jobs.py). The fixtures (import_broker, var_dir) are in conftest.py."""

import base64
import json
from pathlib import Path

from labeling import tasks


def published(queue: Path) -> list[tuple[str, list, str]]:
    """(task name, args, queue name) of every message waiting in the filesystem broker's queue folder."""
    messages = []
    for path in sorted(queue.iterdir()) if queue.exists() else []:
        message = json.loads(path.read_text())
        args, _, _ = json.loads(base64.b64decode(message["body"]))
        messages.append((message["headers"]["task"], args, message["properties"]["delivery_info"]["routing_key"]))
    return messages


def work_off(queue: Path) -> list:
    """Take every run_import message off the queue and run it as a worker would; their results."""
    results = []
    for path in sorted(queue.iterdir()):
        message = json.loads(path.read_text())
        if message["headers"]["task"] != "labeling.tasks.run_import":
            continue
        args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
        path.unlink()
        results.append(tasks.run_import.apply(args=args, kwargs=kwargs).get())
    return results
