"""Where things are in a robosuite scene: task objects by name, their extents, the support surface, goals.

Why a module of its own: robosuite's tasks expose these differently (Lift/Stack keep each object in
an attribute and rest them on a table at ``table_offset``; PickPlace keeps a list of objects, rests
them on the floor of a bin and checks success against a bin compartment). :class:`apo_sim.env.SimEnv`
asks here, so the privileged :class:`~apo_sim.env.TaskState` looks the same for every task.
"""

from __future__ import annotations

import numpy as np


def find_object(env, name: str):
    """The robosuite object model called ``name``: an env attribute (Lift ``cube``) or in ``env.objects``."""
    obj = getattr(env, name, None)
    if obj is not None and hasattr(obj, "root_body"):
        return obj
    for candidate in getattr(env, "objects", []):
        if candidate.name == name:
            return candidate
    raise KeyError(f"robosuite {type(env).__name__} has no object {name!r}")


def object_half_size(env, obj) -> np.ndarray:
    """Half-extents (body frame) of the object's collision geoms, from MuJoCo's bounding boxes.

    Works for primitive boxes and meshes alike (robosuite's XML objects such as the can have no ``size``).
    """
    import mujoco

    model = env.sim.model._model
    half = np.zeros(3)
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
    for geom_name in obj.contact_geoms:
        g = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, geom_name)
        centre, ext = model.geom_aabb[g, :3], model.geom_aabb[g, 3:]
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, model.geom_quat[g])
        corners = (centre + signs * ext) @ rot.reshape(3, 3).T + model.geom_pos[g]
        half = np.maximum(half, np.abs(corners).max(axis=0))
    return half


def support_height(env) -> float:
    """Height (world z) of the surface the task's objects rest on at reset: the table top or the bin floor."""
    if hasattr(env, "table_offset"):
        return float(env.table_offset[2])
    model = env.sim.model
    bin_body = model.body_name2id("bin1")  # PickPlace: the bin floor is the body's first geom (a box)
    floor = int(np.flatnonzero(model.geom_bodyid == bin_body)[0])
    return float(env.bin1_pos[2] + model.geom_pos[floor][2] + model.geom_size[floor][2])


def goal_region(env, target: str) -> np.ndarray | None:
    """(2, 3) low/high corners of where the target's centre must end up, or None (Lift, Stack).

    PickPlace: the target's compartment of the second bin, as robosuite's own success check draws it
    (its x/y quarter of ``bin2``, and below 10 cm above the bin's base).
    """
    if not hasattr(env, "bin2_pos"):
        return None
    index = [o.name for o in env.objects].index(target)
    low = np.array(env.bin2_pos, dtype=np.float64)
    size = np.asarray(env.bin_size, dtype=np.float64)
    if index in (0, 2):
        low[0] -= size[0] / 2
    if index < 2:
        low[1] -= size[1] / 2
    high = np.array([low[0] + size[0] / 2, low[1] + size[1] / 2, env.bin2_pos[2] + 0.1])
    return np.stack([low, high])
