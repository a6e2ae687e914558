"""Scene perturbations for evaluation (the APO paper's second table): position, background, texture.

- ``position``: the task's objects are placed over a wider range than in training (the training
  range is :data:`PLACEMENT` ``train``; ``wide`` contains it);
- ``background``: the floor, walls and table (PickPlaceCan: the bins) get another texture of the scene
  (or none) under a random colour tint;
- ``texture``: the task's objects (Lift's cube, Stack's two cubes, the can) do.

Why in place: MuJoCo reads material colours from the model at every render (texture ids from the
render context's copy of the material table, updated here too), and robosuite's placement sampler
reads its ranges at every reset, so a perturbation is applied between soft resets without reloading
the model or rebuilding the render context (a hard reset costs about a second).

Deterministic per seed: positions come from the environment's generator, which ``SimEnv.reset``
reseeds; colours and textures come from a generator seeded with ``(seed, perturbation)``, so the
same seed gives the same object placement with and without a visual perturbation, and the same
perturbed image twice. Every reset first restores the unperturbed model, so perturbations never
accumulate and switching back to ``None`` gives the training scene.
"""

from __future__ import annotations

import colorsys

import numpy as np

PERTURBATIONS = ("position", "background", "texture")

Range = tuple[tuple[float, float], tuple[float, float]]  # (x_range, y_range) around the sampler's reference

# Training ranges: robosuite's own for Lift and Stack; PickPlaceCan uses the middle of the first bin
# (robosuite samples the whole bin) so that a wider range exists at all inside the bin's walls.
PLACEMENT: dict[str, dict[str, Range]] = {
    "Lift": {"train": ((-0.03, 0.03), (-0.03, 0.03)), "wide": ((-0.10, 0.10), (-0.10, 0.10))},
    "Stack": {"train": ((-0.08, 0.08), (-0.08, 0.08)), "wide": ((-0.14, 0.14), (-0.14, 0.14))},
    "PickPlaceCan": {"train": ((-0.07, 0.07), (-0.10, 0.10)), "wide": ((-0.145, 0.145), (-0.195, 0.195))},
}

# Scene materials that make up the background, where a task's arena has them.
BACKGROUND_MATERIALS = ("floorplane", "walls_mat", "table_ceramic", "table_legs_metal", "light-wood", "dark-wood")
_SALT = {"background": 1, "texture": 2}
_RGB_ROLE = 1  # mjtTextureRole mjTEXROLE_RGB: the column of model.mat_texid holding the colour texture


def check(kind: str | None) -> str | None:
    if kind is not None and kind not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {kind!r}: choose one of {list(PERTURBATIONS)} or None")
    return kind


def random_tint(rng: np.random.Generator) -> np.ndarray:
    """An opaque RGBA colour of random hue, clearly saturated and not too dark."""
    rgb = colorsys.hsv_to_rgb(rng.uniform(0.0, 1.0), rng.uniform(0.35, 0.85), rng.uniform(0.55, 1.0))
    return np.array([*rgb, 1.0], dtype=np.float32)


class ScenePerturber:
    """Applies one perturbation (or none) to a robosuite environment before each reset.

    ``env`` is the raw robosuite environment, ``task`` its apo_sim task name, ``objects`` the robosuite
    object models whose look the ``texture`` perturbation changes, ``seed`` seeds the colours of
    episodes reset without a seed.
    """

    def __init__(self, env, task: str, objects, kind: str | None = None, seed: int | None = None):
        import mujoco

        self.env = env
        self.task = task
        self.kind = check(kind)
        self._rng = np.random.default_rng(seed)
        model = env.sim.model._model
        self._model = model
        self._mat_rgba = model.mat_rgba.copy()
        self._mat_texid = model.mat_texid.copy()
        self._geom_rgba = model.geom_rgba.copy()
        names = {mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_MATERIAL, i): i for i in range(model.nmat)}
        self._background = [names[n] for n in BACKGROUND_MATERIALS if n in names]
        # Each object's visual geoms: recoloured through their material, or their own rgba without one.
        self._object_geoms = [mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, g)
                              for obj in objects for g in obj.visual_geoms]
        self._samplers = _object_samplers(env.placement_initializer, {o.name for o in objects})

    def apply(self, seed: int | None) -> None:
        """Set the placement range and the look for the next reset (call it before ``env.reset()``)."""
        self._set_ranges(PLACEMENT.get(self.task, {}).get("wide" if self.kind == "position" else "train"))
        model = self._model
        model.mat_rgba[:] = self._mat_rgba
        model.mat_texid[:] = self._mat_texid
        model.geom_rgba[:] = self._geom_rgba
        if self.kind in _SALT:
            self._restyle(seed)
        context = getattr(getattr(self.env.sim, "_render_context_offscreen", None), "con", None)
        if context is not None:  # the renderer binds textures from its own copy, made when it was built
            context.mat_texid[:model.mat_texid.size] = model.mat_texid.reshape(-1)

    def _restyle(self, seed: int | None) -> None:
        model = self._model
        rng = np.random.default_rng([int(seed), _SALT[self.kind]]) if seed is not None else self._rng
        if self.kind == "background":
            for mat in self._background:
                self._restyle_material(mat, rng)
        else:
            for geom in self._object_geoms:
                mat = int(model.geom_matid[geom])
                if mat >= 0:
                    self._restyle_material(mat, rng)
                else:
                    model.geom_rgba[geom] = random_tint(rng)

    def _restyle_material(self, mat: int, rng: np.random.Generator) -> None:
        """Another texture of the same kind (2-D or cube) from the scene, or none, under a random tint."""
        model = self._model
        tex = int(self._mat_texid[mat, _RGB_ROLE])
        if tex >= 0:
            choices = [-1] + [t for t in range(model.ntex) if t != tex and model.tex_type[t] == model.tex_type[tex]]
            model.mat_texid[mat, _RGB_ROLE] = choices[int(rng.integers(len(choices)))]
        model.mat_rgba[mat] = random_tint(rng)

    def _set_ranges(self, ranges: Range | None) -> None:
        if ranges is None:
            return
        for sampler in self._samplers:
            sampler.x_range, sampler.y_range = list(ranges[0]), list(ranges[1])


def _object_samplers(initializer, names: set[str]) -> list:
    """The placement samplers (inside a composite one, for PickPlace) that place any of ``names``.

    PickPlaceCan's sampler also places the milk, bread and cereal, which robosuite moves out of the
    scene right after; they are taken out of it, so that the can alone always fits a narrower range.
    """
    samplers = getattr(initializer, "samplers", None)
    if samplers is None:
        return [initializer]
    found = [s for s in samplers.values() if any(o.name in names for o in s.mujoco_objects)]
    for sampler in found:
        sampler.mujoco_objects = [o for o in sampler.mujoco_objects if o.name in names]
    return found
