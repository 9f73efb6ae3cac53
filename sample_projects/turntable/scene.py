"""A turntable: a monkey turning once on a floor, lit by a sun and a sky, seen by a
camera that tracks it. Blender runs this with ``--factory-startup --python scene.py``;
the farm then applies ``[frames]`` (resolution, samples, seed) on top."""

import math

import bpy

FRAMES = 48  # one full turn; frame FRAMES + 1 would equal frame 1, so the video loops

bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene


def material(name, color, roughness=0.5):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*color, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    return mat


# The floor: a large plane, pale grey.
bpy.ops.mesh.primitive_plane_add(size=20)
bpy.context.active_object.data.materials.append(material("floor", (0.6, 0.6, 0.62), 0.8))

# The subject: a smooth orange monkey on a dark plinth, turning about its vertical axis.
bpy.ops.mesh.primitive_cylinder_add(radius=1.1, depth=0.3, location=(0, 0, 0.15))
bpy.context.active_object.data.materials.append(material("plinth", (0.08, 0.08, 0.1), 0.4))
bpy.ops.mesh.primitive_monkey_add(size=1.6, location=(0, 0, 1.25))
monkey = bpy.context.active_object
monkey.name = "Subject"
bpy.ops.object.shade_smooth()
monkey.data.materials.append(material("subject", (0.9, 0.35, 0.05), 0.3))
monkey.rotation_euler = (math.radians(-10), 0, 0)
monkey.keyframe_insert("rotation_euler", index=2, frame=1)
monkey.rotation_euler[2] = 2 * math.pi
monkey.keyframe_insert("rotation_euler", index=2, frame=FRAMES + 1)
for curve in monkey.animation_data.action.fcurves:
    for key in curve.keyframe_points:
        key.interpolation = "LINEAR"  # a steady turn, no ease in and out

# Light: a warm sun for shadows and a blue-grey sky for fill.
sun = bpy.data.objects.new("Sun", bpy.data.lights.new("Sun", "SUN"))
sun.data.energy = 3.0
sun.data.angle = math.radians(5)
sun.rotation_euler = (math.radians(40), math.radians(15), math.radians(30))
scene.collection.objects.link(sun)
world = bpy.data.worlds.new("Sky")
world.use_nodes = True
world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.35, 0.45, 0.6, 1.0)
world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.8
scene.world = world

# Camera: a little above, looking at the subject.
camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
camera.location = (0, -6.5, 2.6)
camera.data.lens = 40
track = camera.constraints.new("TRACK_TO")
track.target = monkey
scene.collection.objects.link(camera)
scene.camera = camera

scene.frame_start, scene.frame_end = 1, FRAMES
scene.render.fps = 24
scene.render.engine = "CYCLES"
scene.render.image_settings.color_mode = "RGB"
