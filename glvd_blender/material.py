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

