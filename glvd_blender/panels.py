"""The N-panel: tab "GLVD", panel "Reconstruct Face"."""

from __future__ import annotations

import bpy

from . import prestart


class GLVD_UL_photos(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        img = item.image
        icon_value = layout.icon(img) if img is not None else 0
        row = layout.row(align=True)
        if icon_value:
            row.label(text=item.name, icon_value=icon_value)
        else:
            row.label(text=item.name or item.filepath, icon="IMAGE_DATA")
        if item.camera is not None:
            row.label(text="", icon="CAMERA_DATA")
        if img is not None and img.packed_file is not None:
            row.label(text="", icon="PACKAGE")


class VIEW3D_PT_glvd_reconstruct(bpy.types.Panel):
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "GLVD"
    bl_label = "Reconstruct Face"

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        s = context.scene.glvd
        job = context.window_manager.glvd_job
        # the artist opened the GLVD tab: start the runtime now (torch + model load take seconds)
        prestart.schedule_prestart()

        layout.label(text="Reference Photos")
        row = layout.row()
        row.template_list("GLVD_UL_photos", "", s, "photos", s, "photo_index", rows=3)
        col = row.column(align=True)
        col.operator("glvd.photo_add", icon="ADD", text="")
        col.operator("glvd.photo_add_image", icon="IMAGE_DATA", text="")
        col.operator("glvd.photo_remove", icon="REMOVE", text="")
        col.separator()
        col.operator("glvd.photo_clear", icon="X", text="")

        if 0 <= s.photo_index < len(s.photos):
            item = s.photos[s.photo_index]
            if item.image is not None:
                layout.template_icon(icon_value=layout.icon(item.image), scale=6.0)
            layout.prop(item, "camera")

        col = layout.column()
        col.use_property_split = True
        col.use_property_decorate = False
        col.prop(s, "steps")
        col.prop(s, "device")
        col.prop(s, "target")
        col.prop(s, "output")
        col.prop(s, "add_expressions")
        if s.add_expressions:
            col.prop(s, "expression")
        col.prop(s, "texture")
        if s.texture:
            col.prop(s, "texture_size")
        col.prop(s, "lens_35mm")
        col.prop(s, "use_cameras")
        col.prop(s, "animate_steps")
        if s.animate_steps:
            col.prop(s, "frames_per_step")

        layout.separator()
        if job.running:
            text = f"Step {job.step}/{job.steps}" if job.step else job.status
            layout.progress(factor=job.progress, type="BAR", text=text)
            layout.label(text=job.status, icon="INFO")
            layout.operator("glvd.cancel_reconstruct", icon="CANCEL", text="Cancel (Esc)")
        else:
            row = layout.row()
            row.scale_y = 1.5
            row.operator("glvd.reconstruct_face", icon="USER")
            if job.last_message:
                layout.label(text=job.last_message)


classes = (GLVD_UL_photos, VIEW3D_PT_glvd_reconstruct)
