# Run: blender -b --factory-startup --python make_scenes.py -- ROOT
# Builds one small .blend per kind of external file, each in its own project folder under ROOT,
# from files the test wrote first: ROOT/shared/{blue.png,tone.wav,font.ttf} (outside every
# project) and ROOT/<project>/tex/blue.png (inside). Each scene is a camera looking at a plane
# lit by its own emission, so a frame's colour is the texture's (magenta if Blender lost it).
import os
import sys

import bpy

ROOT = sys.argv[sys.argv.index("--") + 1]
SHARED = os.path.join(ROOT, "shared")


def empty():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    cam.location = (0, 0, 2.5)
    scene.collection.objects.link(cam)
    scene.camera = cam
    scene.render.engine = "CYCLES"
    return scene


def textured_plane(image_path):
    bpy.ops.mesh.primitive_plane_add(size=2)
    plane = bpy.context.active_object
    plane.name = "Plane"
    mat = bpy.data.materials.new("tex")
    mat.use_nodes = True
    nt = mat.node_tree
    for node in list(nt.nodes):
        nt.nodes.remove(node)
    tex = nt.nodes.new("ShaderNodeTexImage")
    tex.image = bpy.data.images.load(image_path, check_existing=False)
    emit = nt.nodes.new("ShaderNodeEmission")
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    nt.links.new(tex.outputs["Color"], emit.inputs["Color"])
    nt.links.new(emit.outputs["Emission"], out.inputs["Surface"])
    plane.data.materials.append(mat)
    return tex.image


def save(project, name="shot.blend", relative=True, compress=False):
    path = os.path.join(ROOT, project, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=path, relative_remap=relative, compress=compress)


def inside(project):
    return os.path.join(ROOT, project, "tex", "blue.png")


# A texture inside the project, stored relative (//tex/blue.png): travels and renders blue.
empty()
textured_plane(inside("inside"))
save("inside")
# The same, but the test deletes tex/blue.png afterwards: missing inside the project.
empty()
textured_plane(inside("missing"))
save("missing")
# A texture inside the project stored as an absolute path.
empty()
textured_plane(inside("absolute"))
save("absolute", relative=False)
# Outside the project, in a compressed .blend (zstd since Blender 3.0).
empty()
textured_plane(os.path.join(SHARED, "blue.png"))
save("compressed", compress=True)
# Outside the project, packed into the .blend: travels inside the file.
empty()
textured_plane(os.path.join(SHARED, "blue.png")).pack()
save("packed")

# Linked libraries: lib.blend holds the textured plane; shot.blend links it.
for project, lib_dir in (("linked", os.path.join(ROOT, "linked", "lib")),
                         ("linked-outside", SHARED),
                         ("linked-missing", os.path.join(ROOT, "linked-missing", "lib"))):
    empty()
    textured_plane(os.path.join(lib_dir, "tex", "blue.png"))
    os.makedirs(lib_dir, exist_ok=True)
    bpy.ops.wm.save_as_mainfile(filepath=os.path.join(lib_dir, "lib.blend"), relative_remap=True)
    scene = empty()
    with bpy.data.libraries.load(os.path.join(lib_dir, "lib.blend"), link=True, relative=True) as (src, dst):
        dst.objects = ["Plane"]
    for obj in dst.objects:
        scene.collection.objects.link(obj)
    save(project)

# A sound outside the project (a speaker plays it; Blender reads it to mix the scene's audio).
scene = empty()
textured_plane(inside("sound-outside"))
speaker = bpy.data.objects.new("Speaker", bpy.data.speakers.new("Speaker"))
speaker.data.sound = bpy.data.sounds.load(os.path.join(SHARED, "tone.wav"), check_existing=False)
scene.collection.objects.link(speaker)
save("sound-outside")

# A text object whose font file is outside the project.
scene = empty()
textured_plane(inside("font-outside"))
text = bpy.data.curves.new("Title", "FONT")
text.font = bpy.data.fonts.load(os.path.join(SHARED, "font.ttf"), check_existing=False)
scene.collection.objects.link(bpy.data.objects.new("Title", text))
save("font-outside")
# An unbaked fluid simulation: its cache folder is left in Blender's temporary folder.
scene = empty()
textured_plane(inside("cache-outside"))
bpy.ops.mesh.primitive_cube_add()
bpy.context.active_object.name = "Domain"
bpy.context.active_object.modifiers.new("Fluid", "FLUID").fluid_type = "DOMAIN"
save("cache-outside")
print("made scenes in", ROOT)
