"""The baked texture in Blender: a packed image and the "GLVD Face" material that shows it.

The worker writes the texture to a temporary PNG (``result.texture_png``); it is
loaded, packed into the .blend (so the temporary file can go) and put in an
Image Texture node feeding the Principled BSDF's Base Color. The UV map is the
template's ("UVMap"), image row 0 is v = 1 as Blender reads it: no flip.

Every datablock made here is removed again if a later part fails, so a failed
texture never leaves an orphan image or material behind.
"""

from __future__ import annotations

import os

import bpy

MATERIAL_NAME = "GLVD Face"
IMAGE_NAME = "GLVD Face Texture"
NODE_NAME = "GLVD Texture"
MARKER = "glvd_face"  # custom property on the material and image we own
ROUGHNESS = 0.7
LOOK = "glvd_look"  # custom property: the colour, alpha and roughness a shared part material was made with


class TextureError(Exception):
    pass


def owned_material(obj: bpy.types.Object) -> bpy.types.Material | None:
    """The GLVD material in the object's slots (the first one), if any."""
    for mat in obj.data.materials:
        if mat is not None and MARKER in mat:
            return mat
    return None


def _principled(mat: bpy.types.Material) -> bpy.types.ShaderNode | None:
    return next((n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED"), None)


def texture_node(mat: bpy.types.Material) -> bpy.types.ShaderNode | None:
    if mat.node_tree is None:
        return None
    node = mat.node_tree.nodes.get(NODE_NAME)
    return node if node is not None and node.type == "TEX_IMAGE" else None


def _add_texture_node(mat: bpy.types.Material, image: bpy.types.Image) -> bpy.types.ShaderNode:
    if bpy.app.version < (5, 0, 0):  # 5.0 materials always use nodes (the flag is deprecated there)
        mat.use_nodes = True
    nt = mat.node_tree
    bsdf = _principled(mat)
    if bsdf is None:
        bsdf = nt.nodes.new("ShaderNodeBsdfPrincipled")
        out = next((n for n in nt.nodes if n.type == "OUTPUT_MATERIAL"), None) or nt.nodes.new(
            "ShaderNodeOutputMaterial")
        nt.links.new(bsdf.outputs["BSDF"], out.inputs["Surface"])
    tex = nt.nodes.new("ShaderNodeTexImage")
    tex.name = tex.label = NODE_NAME
    tex.image = image
    tex.location = (bsdf.location.x - 340.0, bsdf.location.y)
    nt.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    nt.nodes.active = tex  # Workbench's Texture colour and texture paint use the active image node
    return tex


def new_material(image: bpy.types.Image, version: str) -> bpy.types.Material:
    """"GLVD Face": Image Texture -> Principled BSDF Base Color, roughness 0.7."""
    mat = bpy.data.materials.new(MATERIAL_NAME)
    try:
        _add_texture_node(mat, image)
        _principled(mat).inputs["Roughness"].default_value = ROUGHNESS
        mat.roughness = ROUGHNESS  # the viewport (Solid / Workbench) values
        mat[MARKER] = version
    except Exception:
        bpy.data.materials.remove(mat)
        raise
    return mat


def flat_material(name: str, color: tuple[float, float, float], alpha: float, roughness: float,
                  version: str) -> bpy.types.Material:
    """A Principled BSDF material of one colour (``alpha`` < 1: blended, e.g. the eyes' wet layer)."""
    mat = bpy.data.materials.new(name)
    try:
        if bpy.app.version < (5, 0, 0):
            mat.use_nodes = True
        bsdf = _principled(mat)
        rgba = (*[float(c) for c in color], float(alpha))
        if bsdf is not None:
            bsdf.inputs["Base Color"].default_value = rgba
            bsdf.inputs["Roughness"].default_value = float(roughness)
            bsdf.inputs["Alpha"].default_value = float(alpha)
        mat.diffuse_color = rgba  # the viewport (Solid / Workbench) values
        mat.roughness = float(roughness)
        if alpha < 1.0:
            for attr, value in (("surface_render_method", "BLENDED"), ("blend_method", "BLEND")):
                if hasattr(mat, attr):
                    setattr(mat, attr, value)
                    break
        mat[MARKER] = version
    except Exception:
        bpy.data.materials.remove(mat)
        raise
    return mat


def part_materials(obj: bpy.types.Object, looks: list[dict], polygon_material, version: str) -> None:
    """One material slot per part of the head (the worker's ``materials``: name, color, alpha, roughness,
    textured) and each polygon's slot. The textured one (the skin) comes first: :func:`apply_texture` puts
    the baked texture in it."""
    import numpy as np

    made: list[bpy.types.Material] = []
    slots: list[bpy.types.Material] = []
    try:
        for look in looks:
            sig = repr((tuple(look["color"]), float(look["alpha"]), float(look["roughness"])))
            old = bpy.data.materials.get(str(look["name"]))
            if not look.get("textured") and old is not None and old.get(LOOK) == sig:
                slots.append(old)  # eyes, teeth, mouth, lashes: one material shared by every GLVD head
                continue
            mat = flat_material(str(look["name"]), tuple(look["color"]), float(look["alpha"]),
                                float(look["roughness"]), version)
            mat[LOOK] = sig
            made.append(mat)
            slots.append(mat)
    except Exception:
        for m in made:
            bpy.data.materials.remove(m)
        raise
    me = obj.data
    me.materials.clear()
    for m in slots:
        me.materials.append(m)
    ids = np.ascontiguousarray(polygon_material, dtype=np.int32).reshape(-1)
    attr = me.attributes.get("material_index") or me.attributes.new("material_index", "INT", "FACE")
    attr.data.foreach_set("value", ids)  # the generic attribute: faster than polygons.foreach_set


def load_packed(path: str) -> bpy.types.Image:
    """Load a PNG, pack it into the .blend and name it; the file may be deleted afterwards."""
    if not path or not os.path.isfile(path):
        raise TextureError(f"the baked texture is missing ({path})")
    try:
        img = bpy.data.images.load(path, check_existing=False)
    except RuntimeError as exc:
        raise TextureError(f"cannot read the baked texture {path}: {exc}") from exc
    try:
        img.name = IMAGE_NAME
        img.pack()
        # where "Unpack" would write it (the temporary file goes away)
        img.filepath_raw = "//textures/" + bpy.path.clean_name(img.name) + ".png"
        img[MARKER] = True
    except Exception as exc:
        bpy.data.images.remove(img)
        raise TextureError(f"cannot pack the baked texture: {exc}") from exc
    return img


def _drop_if_unused(image: bpy.types.Image | None) -> None:
    if image is not None and MARKER in image and image.users == 0:
        bpy.data.images.remove(image)


def apply_texture(obj: bpy.types.Object, path: str, version: str) -> bpy.types.Image:
    """Show the texture at ``path`` on ``obj``: new material, or a new image in the existing GLVD material.

    New material: into the first slot (an object without slots gets one). Raises
    TextureError with nothing new left in ``bpy.data`` when anything fails.
    """
    img = load_packed(path)
    mat = owned_material(obj)
    try:
        if mat is None:
            mat = new_material(img, version)
            try:
                mats = obj.data.materials
                if len(mats):
                    mats[0] = mat
                else:
                    mats.append(mat)
            except Exception:
                bpy.data.materials.remove(mat)
                raise
        else:
            node = texture_node(mat)
            if node is None:
                _add_texture_node(mat, img)
            else:
                old, node.image = node.image, img
                if old is not img:
                    _drop_if_unused(old)
    except Exception as exc:
        bpy.data.images.remove(img)
        raise TextureError(f"cannot set up the material: {exc}") from exc
    if img.name != IMAGE_NAME and IMAGE_NAME not in bpy.data.images:
        img.name = IMAGE_NAME  # the replaced image is gone: take its name back
    return img

