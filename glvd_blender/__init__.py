# SPDX-License-Identifier: GPL-3.0-or-later
"""GLVD Face: reconstruct a face mesh from photos, one shape key per descent step.

The model runs in a separate process (``glvd worker``, see worker_client.py); this
package is bpy glue only. Classes register in one ordered tuple: property
groups before what points at them, preferences and operators before panels.
"""

from __future__ import annotations

import bpy

from . import panels, photo_list, preferences, properties, reconstruct, runtime_check, worker_client

classes = (
    *properties.classes,
    preferences.GLVD_AP_preferences,
    *reconstruct.classes,
    *photo_list.classes,
    *runtime_check.classes,
    *panels.classes,
)


@bpy.app.handlers.persistent
def _reset_job_state(_dummy: object = None) -> None:
    # a modal job does not survive loading a file; do not leave the panel saying "running"
    wm = bpy.context.window_manager
    if wm is not None and hasattr(wm, "glvd_job"):
        wm.glvd_job.running = False
        wm.glvd_job.cancel_requested = False


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    properties.register_props()
    bpy.app.handlers.load_post.append(_reset_job_state)


def unregister() -> None:
    if _reset_job_state in bpy.app.handlers.load_post:
        bpy.app.handlers.load_post.remove(_reset_job_state)
    worker_client.shutdown_worker()  # no orphan worker process after disabling
    properties.unregister_props()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
