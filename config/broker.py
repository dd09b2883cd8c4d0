"""Broker transport options, shared by settings and the tests that switch brokers."""

from pathlib import Path


def filesystem_transport_options(folder: Path) -> dict:
    """kombu's filesystem transport in `folder`: the embedded broker that needs
    no server. Producer and consumer share one queue folder."""
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
        "polling_interval": 0.5,
    }
