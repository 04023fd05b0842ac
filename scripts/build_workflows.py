"""Write the bundled workflows (workflows/<name>.json, UI format 0.4) and their thumbnails
(<name>.jpg) from the compact descriptions below.

    .venv-0.33.0/bin/python scripts/build_workflows.py            # (re)write every workflow + thumbnail

Each workflow is a list of nodes (a key, a node type, widget values by input name, links as
(key, output slot)); the node layout (widget order, sockets, outputs) comes from the /object_info
of a ComfyUI server started with this pack, so the files match what the frontend would save.
Positions are laid out by graph depth; ids, links and the "models" download entries are derived.
Output is deterministic: the same descriptions give byte-identical files. The "Shapes world - *"
workflows run on the shapes-world models bundled with the pack (`make demo` runs them).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from _pack import ROOT as REPO_ROOT, load_pack

load_pack()
from negguide.harness import workflows as wf  # noqa: E402
from negguide.harness.server import ComfyServer  # noqa: E402

CORE_VERSION = "0.3.75"
PACK_ID = "negguide"
SEED = 42

# Real model files: name -> (download url, models/ folder). Official repositories only.
MODELS = {
    "v1-5-pruned-emaonly-fp16.safetensors": (
        "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly-fp16.safetensors",
        "checkpoints"),
    "sd_xl_base_1.0.safetensors": (
        "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors",
        "checkpoints"),
    "sdxl_lightning_4step.safetensors": (
        "https://huggingface.co/ByteDance/SDXL-Lightning/resolve/main/sdxl_lightning_4step.safetensors",
        "checkpoints"),
    "sd3.5_large_turbo.safetensors": (
        "https://huggingface.co/stabilityai/stable-diffusion-3.5-large-turbo/resolve/main/sd3.5_large_turbo.safetensors",
        "checkpoints"),
    "flux1-schnell.safetensors": (
        "https://huggingface.co/Comfy-Org/flux1-schnell/resolve/main/flux1-schnell.safetensors", "diffusion_models"),
    "flux1-dev.safetensors": (
        "https://huggingface.co/Comfy-Org/flux1-dev/resolve/main/flux1-dev.safetensors", "diffusion_models"),
    "clip_l.safetensors": (
        "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors", "text_encoders"),
    "clip_g.safetensors": (
        "https://huggingface.co/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/text_encoders/clip_g.safetensors",
        "text_encoders"),
    "t5xxl_fp8_e4m3fn_scaled.safetensors": (
        "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp8_e4m3fn_scaled.safetensors",
        "text_encoders"),
    "ae.safetensors": (
        "https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/ae.safetensors", "vae"),
    # The few-step models of 2026 (workflows 18-23). ae.safetensors above is the Flux VAE that
    # Z-Image uses too (Comfy-Org/z_image_turbo ships the same file under split_files/vae/).
    "z_image_turbo_bf16.safetensors": (
        "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/diffusion_models/z_image_turbo_bf16.safetensors",
        "diffusion_models"),
    # Qwen3-4B: the text encoder of Z-Image Turbo and of Flux.2 Klein 4B (one file for both).
    "qwen_3_4b.safetensors": (
        "https://huggingface.co/Comfy-Org/z_image_turbo/resolve/main/split_files/text_encoders/qwen_3_4b.safetensors",
        "text_encoders"),
    "flux-2-klein-4b.safetensors": (
        "https://huggingface.co/black-forest-labs/FLUX.2-klein-4B/resolve/main/flux-2-klein-4b.safetensors",
        "diffusion_models"),
    "flux2-vae.safetensors": (
        "https://huggingface.co/Comfy-Org/vae-text-encorder-for-flux-klein-4b/resolve/main/split_files/vae/flux2-vae.safetensors",
        "vae"),
    "qwen_image_fp8_e4m3fn.safetensors": (
        "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/diffusion_models/qwen_image_fp8_e4m3fn.safetensors",
        "diffusion_models"),
    "qwen_2.5_vl_7b_fp8_scaled.safetensors": (
        "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors",
        "text_encoders"),
    "qwen_image_vae.safetensors": (
        "https://huggingface.co/Comfy-Org/Qwen-Image_ComfyUI/resolve/main/split_files/vae/qwen_image_vae.safetensors", "vae"),
    "Qwen-Image-Lightning-8steps-V1.1.safetensors": (
        "https://huggingface.co/lightx2v/Qwen-Image-Lightning/resolve/main/Qwen-Image-Lightning-8steps-V1.1.safetensors",
        "loras"),
    "wan2.2_ti2v_5B_fp16.safetensors": (
        "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/diffusion_models/wan2.2_ti2v_5B_fp16.safetensors",
        "diffusion_models"),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": (
        "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "text_encoders"),
    "wan2.2_vae.safetensors": (
        "https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/vae/wan2.2_vae.safetensors", "vae"),
    # Kijai's LoRA extraction of quanhaol/Wan2.2-TI2V-5B-Turbo (a 4-step distill; CC BY-NC-SA 4.0).
    "Wan22_TI2V_5B_Turbo_lora_rank_64_fp16.safetensors": (
        "https://huggingface.co/Kijai/WanVideo_comfy/resolve/main/Wan22-Turbo/Wan22_TI2V_5B_Turbo_lora_rank_64_fp16.safetensors",
        "loras"),
}
BLIP2_DIR = "blip2-opt-2.7b"
BLIP2_HELP = (f"**BLIP-2** (a folder, so no download button): `huggingface-cli download Salesforce/blip2-opt-2.7b "
              f"--local-dir ComfyUI/models/blip2/{BLIP2_DIR}` (about 15 GB in fp32 files; loaded in fp16).")


# ------------------------------------------------------------------------------ descriptions


@dataclass
class N:
    """A node: ``key`` names it within the workflow; ``values`` maps input names to widget values
    or to links (another node's key, output slot)."""

    key: str
    type: str
    values: dict = field(default_factory=dict)
    title: str | None = None


@dataclass
class Workflow:
    name: str
    method: str  # thumbnail title
    model: str  # thumbnail subtitle
    chain: tuple[str, ...]  # thumbnail schematic
    note: str
    nodes: list[N]


def link(key: str, slot: int = 0) -> tuple[str, int]:
    return (key, slot)


def sampler(model, positive, negative, latent, steps, cfg, sampler_name, scheduler, key="sample"):
    return N(key, "KSampler", dict(model=model, seed=SEED, steps=steps, cfg=cfg, sampler_name=sampler_name,
                                   scheduler=scheduler, positive=positive, negative=negative,
                                   latent_image=latent, denoise=1.0))


def decode_save(samples, vae, prefix, key="save", title=None):
    """VAEDecode + SaveImage; ``title`` says what the saved images show (two "Save Image"s say nothing)."""
    return [N(f"{key}_decode", "VAEDecode", dict(samples=samples, vae=vae)),
            N(key, "SaveImage", dict(images=link(f"{key}_decode"), filename_prefix=prefix), title)]


def text(key, clip, prompt, title=None):
    return N(key, "CLIPTextEncode", dict(clip=clip, text=prompt), title)


def flux_loaders(unet):
    return [N("unet", "UNETLoader", dict(unet_name=unet, weight_dtype="default")),
            N("clip", "DualCLIPLoader", dict(clip_name1="clip_l.safetensors",
                                              clip_name2="t5xxl_fp8_e4m3fn_scaled.safetensors",
                                              type="flux", device="default")),
            N("vae", "VAELoader", dict(vae_name="ae.safetensors"))]


def models_note(*names, blip2=False):
    lines = ["**Models** (the frontend offers the downloads; folders under `ComfyUI/models/`):", ""]
    lines += [f"- [{name}]({MODELS[name][0]}) → `{MODELS[name][1]}/`" for name in names]
    if blip2:
        lines.append(f"- {BLIP2_HELP}")
    return "\n".join(lines)


# --- VSF -----------------------------------------------------------------------------------------

CITY = "a busy city street at golden hour, shop windows, street lamps, pedestrians, photo"
CARS = "cars, traffic"


def vsf_note(model_name, scale, bias, steps, sampler_line, files, recommendation=None):
    """``recommendation``: the line on the settings (default: the node help's table for ``model_name``)."""
    recommendation = recommendation or f"Recommended for {model_name}: see the table in the node's help (scale {scale}, bias {bias})."
    return f"""# VSF: a negative prompt at cfg 1 ({model_name})

Few-step distilled models run at **cfg 1**, where the KSampler's negative prompt does nothing.
**NegGuideVSF** (Value Sign Flip) puts the negative inside attention instead: image tokens that
attend to it read its values with the sign flipped, so the concept is cancelled where it would
appear. One pass, no extra model evaluation.

- Negative: type it into the VSF node (here: *{CARS}*). The KSampler's negative stays empty.
- **scale {scale}**, **bias {bias}**: higher scale removes more; higher bias is gentler.
  {recommendation}
- {steps} steps, cfg 1, {sampler_line}, seed {SEED} (fixed).
- Compare: set scale to 0 (the model is returned unchanged) and queue again.

{files}
"""


def vsf(model_name, loaders, model, clip, vae, latent, scale, scheduler, files, extra_note="", *, steps=4, bias=0.1,
        recommendation=None, prefix=None, video=False):
    """A cfg-1 text-to-image graph with NegGuideVSF: ``loaders`` and the (key, slot) links of the
    model, its CLIP and VAE, ``latent`` the latent node (key "latent"); ``steps`` of euler /
    ``scheduler``. ``video``: the frames are saved as an animated WebP (24 fps) instead of images."""
    prefix = "NegGuide/VSF_" + (prefix or model_name.lower().replace(" ", "_").replace(".", ""))
    title = f"VSF: without {CARS}"
    if video:
        output = [N("save_decode", "VAEDecode", dict(samples=link("sample"), vae=vae)),
                  N("save", "SaveAnimatedWEBP", dict(images=link("save_decode"), filename_prefix=prefix, fps=24.0,
                                                     lossless=False, quality=90, method="default"), title)]
    else:
        output = decode_save(link("sample"), vae, prefix, title=title)
    return Workflow(
        f"VSF - {model_name} - negative prompt at cfg 1", "VSF negative prompt", f"{model_name}, {steps} steps, cfg 1",
        ("model", "VSF", "KSampler cfg 1"),
        vsf_note(model_name, scale, bias, steps, f"euler / {scheduler}", models_note(*files), recommendation) + extra_note,
        [*loaders,
         text("pos", clip, CITY, "Positive prompt"),
         N("zero", "ConditioningZeroOut", {"conditioning": link("pos")}),
         N("vsf", "NegGuideVSF", {"model": model, "clip": clip, "negative": CARS, "scale": scale, "bias": bias,
                                  "start_percent": 0.0, "end_percent": 1.0, "record_attention_map": False}),
         latent,
         sampler(link("vsf"), link("pos"), link("zero"), link("latent"), steps, 1.0, "euler", scheduler),
         *output])


def square_latent(latent_type, size=1024):
    return N("latent", latent_type, {"width": size, "height": size, "batch_size": 1})


def vsf_workflows() -> list[Workflow]:
    t5 = "t5xxl_fp8_e4m3fn_scaled.safetensors"
    return [
        vsf("Flux Schnell", flux_loaders("flux1-schnell.safetensors"), link("unet"), link("clip"), link("vae"),
            square_latent("EmptySD3LatentImage"), 4.0, "simple",
            ("flux1-schnell.safetensors", "clip_l.safetensors", t5, "ae.safetensors")),
        vsf("SD3.5 Large Turbo",
            [N("ckpt", "CheckpointLoaderSimple", {"ckpt_name": "sd3.5_large_turbo.safetensors"}),
             N("clip", "TripleCLIPLoader", {"clip_name1": "clip_l.safetensors", "clip_name2": "clip_g.safetensors",
                                            "clip_name3": t5})],
            link("ckpt"), link("clip"), link("ckpt", 2), square_latent("EmptySD3LatentImage"), 3.0, "simple",
            ("sd3.5_large_turbo.safetensors", "clip_l.safetensors", "clip_g.safetensors", t5)),
        vsf("SDXL Lightning", [N("ckpt", "CheckpointLoaderSimple", {"ckpt_name": "sdxl_lightning_4step.safetensors"})],
            link("ckpt"), link("ckpt", 1), link("ckpt", 2), square_latent("EmptyLatentImage"), 2.0, "sgm_uniform",
            ("sdxl_lightning_4step.safetensors",),
            "\nSDXL is a UNet: VSF acts in its cross-attention layers. sgm_uniform is the scheduler ByteDance "
            "recommends for SDXL Lightning.\n"),
    ]


# --- NegToMe -------------------------------------------------------------------------------------

PORTRAIT = "a portrait photo of a person smiling outdoors, natural light, 50mm"


def negtome_note(model_name, mode, alpha, threshold, end, batch, files, sampling):
    if mode == "batch diversity":
        use = (f"Every image of the batch of {batch} is pushed away from the first one inside self-attention, "
               "so the same prompt and seed give more varied people, poses and layouts. The first image is unchanged.")
    else:
        use = ("Every image is pushed away from the **reference image** (LoadImage: pick the picture whose look, "
               "character or layout you do not want copied; `example.png` is ComfyUI's sample image). The reference "
               "is re-noised to each step's noise level and never appears in the output.")
    return f"""# NegToMe: {mode} ({model_name})

{use}

- **alpha {alpha}** (strength; 0 = off), **threshold {threshold}** (only tokens more similar than this move),
  window **0 - {end}** of the schedule: NegToMe shapes the layout in the early steps only.
- {sampling}, seed {SEED} (fixed), batch {batch}.
- Too strong (higher alpha, lower threshold, longer window) breaks the composition.
- Compare: set alpha to 0 and queue again.

{files}
"""


def negtome(model_name, mode, loaders, model, clip, vae, conditioning, latent_type, threshold, end, sampling,
            files, guidance=None, size=1024):
    """A text-to-image graph with NegGuideNegToMe in ``mode``; ``conditioning`` is a function of
    the positive prompt's link giving the extra nodes and the (positive, negative) links."""
    reference = mode == "reference image"
    batch = 2 if reference else 4
    steps, cfg, sampler_name, scheduler = sampling
    extra, positive, negative = conditioning(link("pos"))
    nodes = [*loaders, text("pos", clip, PORTRAIT, "Positive prompt"), *extra]
    values = {"model": model, "alpha": 0.9, "threshold": threshold, "start_percent": 0.0, "end_percent": end,
              "mode": mode, "seed": 0}
    if reference:
        nodes.append(N("reference", "LoadImage", {"image": "example.png"}, "Reference image (to steer away from)"))
        values.update(reference_image=link("reference"), vae=vae)
    kind = "reference" if reference else "diversity"
    nodes += [N("negtome", "NegGuideNegToMe", values),
              N("latent", latent_type, {"width": size, "height": size, "batch_size": batch}),
              sampler(link("negtome"), positive, negative, link("latent"), steps, cfg, sampler_name, scheduler),
              *decode_save(link("sample"), vae, f"NegGuide/NegToMe_{model_name.lower().replace(' ', '_').replace('.', '')}_{kind}",
                           title="NegToMe: away from the reference" if reference else "NegToMe: the diverse batch")]
    if guidance is None:
        guidance = "cfg 1 with FluxGuidance 3.5" if cfg == 1 else f"cfg {cfg:g}"
    return Workflow(
        f"NegToMe - {model_name} - {'steer away from a reference image' if reference else 'more diverse batch'}",
        f"NegToMe: {mode}", f"{model_name}, batch {batch}", ("model", "NegToMe", "KSampler", f"{batch} images"),
        negtome_note(model_name, mode, 0.9, threshold, end, batch, models_note(*files),
                     f"{steps} steps, {guidance}, {sampler_name} / {scheduler}"),
        nodes)


def sdxl_conditioning(positive):
    return [text("neg", link("ckpt", 1), "blurry, low quality", "Negative prompt")], positive, link("neg")


def flux_conditioning(positive):
    return ([N("guidance", "FluxGuidance", {"conditioning": positive, "guidance": 3.5}),
             N("zero", "ConditioningZeroOut", {"conditioning": positive})], link("guidance"), link("zero"))


def negtome_workflows() -> list[Workflow]:
    sdxl = ("SDXL", [N("ckpt", "CheckpointLoaderSimple", {"ckpt_name": "sd_xl_base_1.0.safetensors"})],
            link("ckpt"), link("ckpt", 1), link("ckpt", 2), sdxl_conditioning, "EmptyLatentImage", 0.7, 0.2,
            (25, 7.0, "dpmpp_2m", "karras"), ("sd_xl_base_1.0.safetensors",))
    flux = ("Flux dev", flux_loaders("flux1-dev.safetensors"), link("unet"), link("clip"), link("vae"),
            flux_conditioning, "EmptySD3LatentImage", 0.65, 0.26, (20, 1.0, "euler", "simple"),
            ("flux1-dev.safetensors", "clip_l.safetensors", "t5xxl_fp8_e4m3fn_scaled.safetensors", "ae.safetensors"))
    return [negtome(name, mode, *rest) for name, *rest in (sdxl, flux) for mode in ("batch diversity", "reference image")]


# --- The few-step models of 2026 (Z-Image Turbo, Flux.2 Klein, Qwen-Image Lightning, Wan 2.2) ------

UNTUNED = ("NegGuide has no measured recommendation for this model yet: scale {scale} / bias {bias} are a "
           "starting point{basis}; lower the scale if the image breaks, raise it if the concept stays.")


def z_image_loaders():
    """Z-Image Turbo as ComfyUI loads it: UNETLoader + CLIPLoader lumina2 (Qwen3-4B) + the Flux VAE,
    ModelSamplingAuraFlow shift 3 (the model's own default shift)."""
    return [N("unet", "UNETLoader", dict(unet_name="z_image_turbo_bf16.safetensors", weight_dtype="default")),
            N("shift", "ModelSamplingAuraFlow", dict(model=link("unet"), shift=3.0)),
            N("clip", "CLIPLoader", dict(clip_name="qwen_3_4b.safetensors", type="lumina2", device="default")),
            N("vae", "VAELoader", dict(vae_name="ae.safetensors"))]


def klein_loaders():
    """Flux.2 Klein 4B: UNETLoader + CLIPLoader flux2 (Qwen3-4B: ComfyUI picks the Klein encoder
    from the file) + the Flux.2 VAE."""
    return [N("unet", "UNETLoader", dict(unet_name="flux-2-klein-4b.safetensors", weight_dtype="default")),
            N("clip", "CLIPLoader", dict(clip_name="qwen_3_4b.safetensors", type="flux2", device="default")),
            N("vae", "VAELoader", dict(vae_name="flux2-vae.safetensors"))]


def qwen_image_loaders():
    """Qwen-Image + the Lightning 8-step LoRA (model only), ModelSamplingAuraFlow shift 3."""
    return [N("unet", "UNETLoader", dict(unet_name="qwen_image_fp8_e4m3fn.safetensors", weight_dtype="default")),
            N("lora", "LoraLoaderModelOnly", dict(model=link("unet"), lora_name="Qwen-Image-Lightning-8steps-V1.1.safetensors",
                                                  strength_model=1.0)),
            N("shift", "ModelSamplingAuraFlow", dict(model=link("lora"), shift=3.0)),
            N("clip", "CLIPLoader", dict(clip_name="qwen_2.5_vl_7b_fp8_scaled.safetensors", type="qwen_image",
                                         device="default")),
            N("vae", "VAELoader", dict(vae_name="qwen_image_vae.safetensors"))]


def wan22_loaders():
    """Wan 2.2 TI2V 5B + the Turbo (4-step distill) LoRA, CLIPLoader wan (UMT5-XXL), the Wan 2.2 VAE."""
    return [N("unet", "UNETLoader", dict(unet_name="wan2.2_ti2v_5B_fp16.safetensors", weight_dtype="default")),
            N("lora", "LoraLoaderModelOnly", dict(model=link("unet"), lora_name="Wan22_TI2V_5B_Turbo_lora_rank_64_fp16.safetensors",
                                                  strength_model=1.0)),
            N("clip", "CLIPLoader", dict(clip_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors", type="wan", device="default")),
            N("vae", "VAELoader", dict(vae_name="wan2.2_vae.safetensors"))]


Z_IMAGE_FILES = ("z_image_turbo_bf16.safetensors", "qwen_3_4b.safetensors", "ae.safetensors")
KLEIN_FILES = ("flux-2-klein-4b.safetensors", "qwen_3_4b.safetensors", "flux2-vae.safetensors")
Z_IMAGE_ABOUT = ("Z-Image Turbo loads as a diffusion model (UNETLoader), its Qwen3-4B text encoder through "
                 "CLIPLoader type *lumina2* and the Flux VAE; ModelSamplingAuraFlow sets shift 3. VSF adds the "
                 "negative to the joint text-image attention; the text refiner keeps prompt and negative apart "
                 "(see the node's help for the known limits on Z-Image).")
KLEIN_ABOUT = ("Flux.2 Klein 4B loads as a diffusion model (UNETLoader), its Qwen3-4B text encoder through CLIPLoader "
               "type *flux2* (ComfyUI picks the Klein encoder from the file; hosts without it cannot run this "
               "workflow) and the Flux.2 VAE; EmptyFlux2LatentImage makes its 128-channel latent.")


def few_step_vsf(model_name, short, loaders, model, latent, steps, scale, files, basis, about, video=False):
    """VSF on a 2026 few-step model (euler / simple, bias 0.1): no measured recommendation yet, so
    the note says what the settings are based on (``basis``) and ``about`` its loaders."""
    return vsf(model_name, loaders, model, link("clip"), link("vae"), latent, scale, "simple", files,
               "\n" + about + "\n", steps=steps, recommendation=UNTUNED.format(scale=scale, bias=0.1, basis=basis),
               prefix=short, video=video)


def few_step_vsf_workflows() -> list[Workflow]:
    return [
        few_step_vsf("Z-Image Turbo", "z_image_turbo", z_image_loaders(), link("shift"), square_latent("EmptySD3LatentImage"),
                     8, 3.0, Z_IMAGE_FILES, " (the range of the joint-attention models SD3.5 and Flux)", Z_IMAGE_ABOUT),
        few_step_vsf("Flux.2 Klein 4B", "flux2_klein_4b", klein_loaders(), link("unet"),
                     square_latent("EmptyFlux2LatentImage"), 4, 3.5, KLEIN_FILES, " (Flux Schnell's lower end)",
                     KLEIN_ABOUT),
        few_step_vsf("Qwen-Image Lightning", "qwen_image_lightning", qwen_image_loaders(), link("shift"),
                     square_latent("EmptySD3LatentImage", 1328),
                     8, 3.0, ("qwen_image_fp8_e4m3fn.safetensors", "Qwen-Image-Lightning-8steps-V1.1.safetensors",
                              "qwen_2.5_vl_7b_fp8_scaled.safetensors", "qwen_image_vae.safetensors"),
                     " (the range of the joint-attention models SD3.5 and Flux)",
                     "Qwen-Image loads as a diffusion model (UNETLoader); LoraLoaderModelOnly applies lightx2v's "
                     "Lightning 8-step LoRA (V1.1), which is what makes 8 steps at cfg 1 possible; "
                     "ModelSamplingAuraFlow sets shift 3; the Qwen2.5-VL-7B text encoder loads through CLIPLoader "
                     "type *qwen_image*; 1328 x 1328 is Qwen-Image's native square size."),
        few_step_vsf("Wan 2.2 5B Turbo", "wan22_5b_turbo", wan22_loaders(), link("lora"),
                     N("latent", "Wan22ImageToVideoLatent", {"vae": link("vae"), "width": 1280, "height": 704,
                                                             "length": 49, "batch_size": 1}),
                     4, 1.5, ("wan2.2_ti2v_5B_fp16.safetensors", "Wan22_TI2V_5B_Turbo_lora_rank_64_fp16.safetensors",
                              "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan2.2_vae.safetensors"),
                     " (inside the README's range for Wan 2.1: scale 1.0-1.8, bias 0.1-0.2)",
                     "Wan 2.2 TI2V 5B loads as a diffusion model (UNETLoader); LoraLoaderModelOnly applies the Turbo "
                     "LoRA (Kijai's extraction of quanhaol/Wan2.2-TI2V-5B-Turbo, a 4-step distill; its licence is "
                     "CC BY-NC-SA 4.0, non-commercial), the UMT5-XXL text encoder loads through CLIPLoader type *wan* "
                     "and the Wan 2.2 VAE; Wan22ImageToVideoLatent makes the video latent (text to video: no start "
                     "image; connect one for image to video). 49 frames at 1280 x 704, saved as an animated WebP at "
                     "24 fps. Wan is a cross-attention model: VSF acts in its text cross-attention.",
                     video=True),
    ]


def zero_conditioning(positive):
    return [N("zero", "ConditioningZeroOut", {"conditioning": positive})], positive, link("zero")


def few_step_negtome_workflows() -> list[Workflow]:
    """NegToMe batch diversity on Z-Image Turbo and Flux.2 Klein 4B (cfg 1, the negative zeroed)."""
    cfg1 = "cfg 1 (the KSampler's negative is zeroed; it does nothing at cfg 1)"
    z_image = negtome("Z-Image Turbo", "batch diversity", z_image_loaders(), link("shift"), link("clip"), link("vae"),
                      zero_conditioning, "EmptySD3LatentImage", 0.65, 0.3, (8, 1.0, "euler", "simple"), Z_IMAGE_FILES,
                      guidance=cfg1)
    klein = negtome("Flux.2 Klein 4B", "batch diversity", klein_loaders(), link("unet"), link("clip"), link("vae"),
                    zero_conditioning, "EmptyFlux2LatentImage", 0.65, 0.5, (4, 1.0, "euler", "simple"), KLEIN_FILES,
                    guidance=cfg1)
    for workflow, steps, about in ((z_image, 8, Z_IMAGE_ABOUT), (klein, 4, KLEIN_ABOUT)):
        window = "the first 30% of the schedule" if steps == 8 else "the first half of the schedule (2 of the 4 steps)"
        workflow.note += (f"\nNegGuide has no measured recommendation for NegToMe on this model yet: alpha 0.9, "
                          f"threshold 0.65 and {window} are a starting point (Flux dev's settings, the window "
                          f"widened for {steps} steps).\n\n{about}\n")
    return [z_image, klein]


# --- DNG -----------------------------------------------------------------------------------------

STREET = "a photo of a quiet street with trees, parked cars and houses"
RELATED, UNRELATED = "cars", "an elephant"


def dng_branches(loader, cfg, prefix, negatives, steps=20, sampler_name="euler_ancestral", scheduler="normal"):
    """Shared sampling nodes (RandomNoise, KSamplerSelect, BasicScheduler; by default
    euler_ancestral / normal, 20 steps) and, per (branch, negative text), a NegGuideDNGGuider
    branch with its SaveImage and lambda(t) plot. ``loader`` is the key of the node giving MODEL, CLIP, VAE (slots 0, 1, 2); the prompt
    and empty-prompt encodings are the nodes "pos" and "empty", the latent is "latent"."""
    nodes = [N("noise", "RandomNoise", dict(noise_seed=SEED)),
             N("sampler", "KSamplerSelect", dict(sampler_name=sampler_name)),
             N("sigmas", "BasicScheduler", dict(model=link(loader), scheduler=scheduler, steps=steps, denoise=1.0))]
    for branch, negative in negatives:
        nodes += [
            text(f"neg_{branch}", link(loader, 1), negative, f"Negative: {branch}"),
            N(f"guider_{branch}", "NegGuideDNGGuider", dict(
                model=link(loader), positive=link("pos"), negative=link(f"neg_{branch}"), cfg=cfg, lambda0=15.0,
                prior=0.01, temperature=0.25, offset=0.003, p_min=1e-6, p_max=0.99, empty_conditioning=link("empty"))),
            N(f"sample_{branch}", "SamplerCustomAdvanced", dict(
                noise=link("noise"), guider=link(f"guider_{branch}"), sampler=link("sampler"), sigmas=link("sigmas"),
                latent_image=link("latent"))),
            *decode_save(link(f"sample_{branch}"), link(loader, 2), f"{prefix}_{branch}", key=f"save_{branch}",
                         title=f"DNG: {branch} negative ({negative})"),
            N(f"plot_{branch}", "NegGuideDNGPlot", dict(samples=link(f"sample_{branch}"), curve="lambda",
                                                         guider=link(f"guider_{branch}"))),
            N(f"show_plot_{branch}", "PreviewImage", dict(images=link(f"plot_{branch}")), f"lambda(t): {branch} negative"),
        ]
    return nodes


def dng(family):
    sd15 = family == "SD1.5"
    ckpt = "v1-5-pruned-emaonly-fp16.safetensors" if sd15 else "sd_xl_base_1.0.safetensors"
    size = 512 if sd15 else 1024
    nodes = [N("ckpt", "CheckpointLoaderSimple", dict(ckpt_name=ckpt)),
             text("pos", link("ckpt", 1), STREET, "Positive prompt"),
             text("empty", link("ckpt", 1), "", "Empty prompt (CFG)"),
             N("latent", "EmptyLatentImage", dict(width=size, height=size, batch_size=1)),
             *dng_branches("ckpt", 7.5, f"NegGuide/DNG_{family.lower().replace('.', '')}",
                           (("related", RELATED), ("unrelated", UNRELATED)))]
    note = f"""# DNG: a related and an unrelated negative side by side ({family})

**Dynamic Negative Guidance** pushes away from the negative only while the image is actually
heading towards it: the guidance scale lambda(t) follows the tracked probability that the concept
is being generated. Both branches use the same prompt (*{STREET}*), seed and settings:

- **related** negative *{RELATED}*: the paper reports lambda rising where cars start to form, and
  the cars removed;
- **unrelated** negative *{UNRELATED}*: the paper reports lambda staying near 0 and the image
  staying what the prompt gives.

These are the paper's claims on SD, not measured by NegGuide (no SD weights on its test
machines); the shapes-world version of this workflow and the README's NegBench v2 show what was
measured, with intervals.

The plots (NegGuideDNGPlot) show lambda(t) of each branch.

- NegGuideDNGGuider = CFG {7.5} on the prompt + DNG away from the negative, one batched model call
  per step (positive, empty, negative). Paper settings for SD: prior 0.01, temperature 0.25,
  offset 0.003, lambda0 15 (12-27 per prompt).
- euler_ancestral (exact posterior tracking on this EPS model), 20 steps, {size} px, seed {SEED} (fixed).

{models_note(ckpt)}
"""
    return Workflow(f"DNG - {family} - related vs unrelated negative", "DNG: related vs unrelated negative",
                    f"{family}, CFG 7.5 + DNG", ("model", "DNG guider x 2", "lambda(t) plots"), note, nodes)


# --- auto-DNP ------------------------------------------------------------------------------------

DOG = "a photo of a dog running on a beach"


def auto_dnp(family):
    sd15 = family == "SD1.5"
    ckpt = "v1-5-pruned-emaonly-fp16.safetensors" if sd15 else "sd_xl_base_1.0.safetensors"
    size, cfg = (512, 7.0) if sd15 else (1024, 7.0)
    nodes = [N("ckpt", "CheckpointLoaderSimple", dict(ckpt_name=ckpt)),
             text("pos", link("ckpt", 1), DOG, "Positive prompt"),
             text("empty", link("ckpt", 1), "", "Empty prompt"),
             N("latent", "EmptyLatentImage", dict(width=size, height=size, batch_size=1)),
             N("dns", "NegGuideDNS", dict(model=link("ckpt"))),
             sampler(link("dns"), link("pos"), link("empty"), link("latent"), 20, cfg, "euler", "normal", key="dns_sample"),
             N("dns_decode", "VAEDecode", dict(samples=link("dns_sample"), vae=link("ckpt", 2))),
             N("dns_show", "PreviewImage", dict(images=link("dns_decode")), "Diffusion-negative image"),
             N("blip2", "NegGuideBLIP2Loader", dict(model_name=BLIP2_DIR, dtype="fp16")),
             N("caption", "NegGuideBLIP2Caption", dict(blip2_model=link("blip2"), image=link("dns_decode"), prompt="",
                                                       max_new_tokens=50, num_beams=1)),
             N("neg", "CLIPTextEncode", dict(clip=link("ckpt", 1), text=link("caption")), "Negative prompt = the caption"),
             sampler(link("ckpt"), link("pos"), link("neg"), link("latent"), 20, cfg, "euler", "normal"),
             *decode_save(link("sample"), link("ckpt", 2), f"NegGuide/autoDNP_{family.lower().replace('.', '')}",
                          title="auto-DNP: the caption as the negative")]
    note = f"""# auto-DNP: the model finds its own negative prompt ({family})

Diffusion-Negative Prompting (Desai & Vasconcelos, ECCV 2024), in one queue:

1. **NegGuideDNS** makes the KSampler draw the *diffusion-negative* image: what the model
   considers least like the prompt (*{DOG}*). It is shown by the preview node.
2. **BLIP-2** captions it; the caption is shown on the caption node.
3. The caption is the **negative prompt** of the final KSampler: the **unpatched** model, the same
   seed ({SEED}, fixed) and settings (20 steps, cfg {cfg}, euler / normal, {size} px).

Cost: two generations and one caption. Batch size 1 (one caption per image). BLIP-2: greedy
decoding, 50 new tokens, no text prompt, fp16 (the paper's settings; use fp32 on a CPU).

{models_note(ckpt, blip2=True)}
"""
    return Workflow(f"auto-DNP - {family} - BLIP-2 finds the negative prompt", "auto-DNP with BLIP-2",
                    f"{family}, DNS + BLIP-2 caption", ("DNS image", "BLIP-2 caption", "negative prompt"), note, nodes)


# --- Shapes world (the embedded default models; `make demo` runs these) ---------------------------

SHAPES_PROMPT = "a red square on a beach"
CPU_DEMO = wf.CPU_DEMO_MARK  # names the CPU-runnable workflows (after the position number)
SHAPES_FILES = """**Models**: none to download. `NegGuideShapesWorldLoader` loads the tiny shapes-world models
bundled with NegGuide (64x64 scenes of coloured shapes; see the node's help). A beach usually
brings a **sun** without being asked; a **moon** never appears on a beach."""


def shapes_loader(family):
    return N("world", "NegGuideShapesWorldLoader", dict(family=family), f"Shapes world ({family})")


def shapes_latent(family, batch):
    latent_type = "EmptyLatentImage" if family == "sd15" else "EmptySD3LatentImage"
    return N("latent", latent_type, dict(width=64, height=64, batch_size=batch))


def shapes_vsf(family, steps):
    label = {"sd3": "SD3", "flux": "Flux"}[family]
    nodes = [shapes_loader(family),
             text("pos", link("world", 1), SHAPES_PROMPT, "Positive prompt"),
             N("zero", "ConditioningZeroOut", {"conditioning": link("pos")}),
             shapes_latent(family, 4),
             sampler(link("world"), link("pos"), link("zero"), link("latent"), steps, 1.0, "euler", "simple", key="plain"),
             *decode_save(link("plain"), link("world", 2), f"NegGuide/shapes_vsf_{family}_plain", key="save_plain",
                          title="plain: cfg 1, no negative"),
             N("vsf", "NegGuideVSF", {"model": link("world"), "clip": link("world", 1), "negative": "sun", "scale": 3.0,
                                      "bias": 0.1, "start_percent": 0.0, "end_percent": 1.0, "record_attention_map": False}),
             sampler(link("vsf"), link("pos"), link("zero"), link("latent"), steps, 1.0, "euler", "simple"),
             *decode_save(link("sample"), link("world", 2), f"NegGuide/shapes_vsf_{family}", title="VSF: negative 'sun'")]
    note = f"""# Shapes world: VSF with the negative "sun" at cfg 1 ({label}, {steps} steps)

Prompt *{SHAPES_PROMPT}*; the model often adds a sun. Top: cfg 1, no negative (the KSampler's
negative does nothing at cfg 1). Bottom: the same seed through **NegGuideVSF** with the negative
*sun* (scale 3, bias 0.1). How much VSF removes on this tiny model, against the plain run and
against a neutral negative, is measured in the README (NegBench v2, with intervals): a single
batch of 4 shows what VSF does, not whether it works.

{steps} steps, euler / simple, cfg 1, batch 4, seed {SEED} (fixed).

{SHAPES_FILES}
"""
    return Workflow(f"{CPU_DEMO}VSF - shapes world {label} - negative prompt at cfg 1", "VSF (shapes world)",
                    f"{label}-style tiny model, {steps} steps, cfg 1", ("shapes model", "VSF", "KSampler cfg 1"), note, nodes)


def shapes_negtome_diversity():
    nodes = [shapes_loader("flux"),
             text("pos", link("world", 1), SHAPES_PROMPT, "Positive prompt"),
             N("zero", "ConditioningZeroOut", {"conditioning": link("pos")}),
             shapes_latent("flux", 4),
             sampler(link("world"), link("pos"), link("zero"), link("latent"), 4, 1.0, "euler", "simple", key="plain"),
             *decode_save(link("plain"), link("world", 2), "NegGuide/shapes_negtome_plain", key="save_plain",
                          title="plain batch"),
             N("negtome", "NegGuideNegToMe", dict(model=link("world"), alpha=0.9, threshold=0.65, start_percent=0.0,
                                                  end_percent=0.3, mode="batch diversity")),
             sampler(link("negtome"), link("pos"), link("zero"), link("latent"), 4, 1.0, "euler", "simple"),
             *decode_save(link("sample"), link("world", 2), "NegGuide/shapes_negtome", title="NegToMe: the diverse batch")]
    note = f"""# Shapes world: NegToMe batch diversity (Flux-style, 4 steps)

A batch of 4 for *{SHAPES_PROMPT}*, without (top) and with (bottom) **NegGuideNegToMe** in
batch-diversity mode: in the first 30% of the steps each image's tokens are pushed away from
their best match in image 0 of the batch (alpha 0.9, threshold 0.65), so the images spread out.

4 steps, euler / simple, cfg 1, seed {SEED} (fixed).

{SHAPES_FILES}
"""
    return Workflow(f"{CPU_DEMO}NegToMe - shapes world Flux - batch diversity", "NegToMe diversity (shapes world)",
                    "Flux-style tiny model, batch 4", ("shapes model", "NegToMe", "KSampler batch 4"), note, nodes)


def shapes_negtome_reference():
    nodes = [shapes_loader("sd3"),
             text("pos", link("world", 1), SHAPES_PROMPT, "Positive prompt"),
             N("zero", "ConditioningZeroOut", {"conditioning": link("pos")}),
             shapes_latent("sd3", 1),
             sampler(link("world"), link("pos"), link("zero"), link("latent"), 8, 1.0, "euler", "simple", key="plain"),
             *decode_save(link("plain"), link("world", 2), "NegGuide/shapes_negtome_reference_image", key="save_plain",
                          title="plain = the reference image"),
             N("negtome", "NegGuideNegToMe", dict(model=link("world"), alpha=0.9, threshold=0.65, start_percent=0.0,
                                                  end_percent=0.3, mode="reference image",
                                                  reference_image=link("save_plain_decode"), vae=link("world", 2),
                                                  seed=0)),
             sampler(link("negtome"), link("pos"), link("zero"), link("latent"), 8, 1.0, "euler", "simple"),
             *decode_save(link("sample"), link("world", 2), "NegGuide/shapes_negtome_away_from_reference",
                          title="NegToMe: away from the reference")]
    note = f"""# Shapes world: NegToMe away from a reference image (SD3-style, 8 steps)

The top branch draws *{SHAPES_PROMPT}* (seed {SEED}): that image becomes the **reference**. The
bottom branch draws the same prompt with the same seed through **NegGuideNegToMe** in
reference-image mode: tokens that match the reference are pushed away from it in the first 30%
of the steps, so the result keeps the prompt but departs from the reference (the use case:
staying away from a copyrighted image).

8 steps, euler / simple, cfg 1.

{SHAPES_FILES}
"""
    return Workflow(f"{CPU_DEMO}NegToMe - shapes world SD3 - away from a reference image", "NegToMe reference (shapes world)",
                    "SD3-style tiny model, 8 steps", ("reference image", "NegToMe", "KSampler"), note, nodes)


def shapes_dng():
    nodes = [shapes_loader("sd3"),
             text("pos", link("world", 1), SHAPES_PROMPT, "Positive prompt"),
             text("empty", link("world", 1), "", "Empty prompt"),
             shapes_latent("sd3", 4),
             sampler(link("world"), link("pos"), link("empty"), link("latent"), 8, 4.0, "euler", "simple", key="plain"),
             *decode_save(link("plain"), link("world", 2), "NegGuide/shapes_dng_cfg_only", key="save_plain",
                          title="plain: CFG 4 only"),
             *dng_branches("world", 4.0, "NegGuide/shapes_dng", (("related", "sun"), ("unrelated", "moon")),
                           steps=8, sampler_name="euler", scheduler="simple")]
    note = f"""# Shapes world: DNG with a related and an unrelated negative (SD3-style)

*{SHAPES_PROMPT}*, batch 4, seed {SEED}: CFG 4 only (first), then **NegGuideDNGGuider** with the
**related** negative *sun* and with the **unrelated** negative *moon* (never on a beach). The
plots show lambda(t) per image: the posterior weighs each negative against the empty prompt's
prediction, so it should rise for the sun and stay at its prior 0.01 for the moon. Measured over
all NegBench v2 prompts on this model (README, 64 images each): maximum p 0.31 [0.26, 0.36] for
related negatives, 0.016 [0.008, 0.023] for unrelated ones; DNG then removed the related object
by -0.20 [-0.26, -0.15] (CFG with it: -0.41, but CFG with the neutral *car* also removes -0.30;
beyond that control DNG -0.21, CFG -0.11) and changed the images for an unrelated one by 0.8
of 255 (CFG: 18.1). On the SD1.5- and Flux-style models the posterior does not separate the
two, so this demo uses the SD3 one. A batch of 4 shows what DNG does, not whether it works.

8 steps, euler / simple, cfg 4, prior 0.01, temperature 0.25, offset 0.003, lambda0 15.

{SHAPES_FILES}
"""
    return Workflow(f"{CPU_DEMO}DNG - shapes world SD3 - related vs unrelated negative", "DNG (shapes world)",
                    "SD3-style tiny model, CFG 4 + DNG", ("shapes model", "DNG guider x 2", "lambda(t) plots"), note, nodes)


def shapes_auto_dnp():
    nodes = [shapes_loader("sd15"),
             text("pos", link("world", 1), SHAPES_PROMPT, "Positive prompt"),
             text("empty", link("world", 1), "", "Empty prompt"),
             shapes_latent("sd15", 1),
             N("dns", "NegGuideDNS", dict(model=link("world"))),
             sampler(link("dns"), link("pos"), link("empty"), link("latent"), 20, 5.0, "euler_ancestral", "normal",
                     key="dns_sample"),
             *decode_save(link("dns_sample"), link("world", 2), "NegGuide/shapes_dns_image", key="dns_save",
                          title="DNS: the diffusion-negative image"),
             N("caption", "NegGuideShapesWorldCaption", dict(image=link("dns_save_decode"), threshold=0.5)),
             N("neg", "CLIPTextEncode", dict(clip=link("world", 1), text=link("caption")), "Negative prompt = the caption"),
             sampler(link("world"), link("pos"), link("neg"), link("latent"), 20, 5.0, "euler_ancestral", "normal"),
             *decode_save(link("sample"), link("world", 2), "NegGuide/shapes_auto_dnp",
                          title="auto-DNP: the caption as the negative")]
    note = f"""# Shapes world: auto-DNP (SD1.5-style)

1. **NegGuideDNS**: the diffusion-negative image of *{SHAPES_PROMPT}* (what the model thinks is
   least like it), saved first.
2. **NegGuideShapesWorldCaption** (the world's judge, standing in for BLIP-2 here) captions it.
3. The caption is the negative prompt of the final KSampler: unpatched model, same seed ({SEED}).

20 steps, euler_ancestral / normal, cfg 5, batch 1. On real models use the BLIP-2 version of this
workflow.

{SHAPES_FILES}
"""
    return Workflow(f"{CPU_DEMO}auto-DNP - shapes world SD1.5 - judge caption as the negative", "auto-DNP (shapes world)",
                    "SD1.5-style tiny model, DNS + caption", ("DNS image", "caption", "negative prompt"), note, nodes)


def shapes_world_workflows() -> list[Workflow]:
    return [shapes_vsf("sd3", 8), shapes_vsf("flux", 4), shapes_negtome_diversity(), shapes_negtome_reference(),
            shapes_dng(), shapes_auto_dnp()]


def all_workflows() -> list[Workflow]:
    """Every workflow, in the order the Templates browser should list them: the CPU-runnable
    shapes-world ones first. The file name starts with the position ("01 ", "02 ", ...): ComfyUI
    lists a pack's templates in directory (glob) order, unsorted; the frontend keeps that order
    ("Default") or sorts by name ("Alphabetical (A-Z)": numeric-aware), so the numbers give the
    same order wherever names are sorted."""
    ordered = [*shapes_world_workflows(),
               *vsf_workflows(),
               *negtome_workflows(),
               dng("SD1.5"), dng("SDXL"), auto_dnp("SD1.5"), auto_dnp("SDXL"),
               # After the first 17 so that their names (the Templates titles users know) stay.
               *few_step_vsf_workflows(), *few_step_negtome_workflows()]
    for position, workflow in enumerate(ordered, start=1):
        workflow.name = f"{position:02d} {workflow.name}"
    return ordered


# ------------------------------------------------------------------------------ UI format


COLUMN_WIDTH, GAP = 420, 40
NOTE_SIZE = [520, 640]


def node_size(node_type: str, info: dict, inputs: int, outputs: int) -> list[int]:
    """A size close to what the frontend computes (it enlarges nodes that are too small)."""
    if node_type in ("SaveImage", "PreviewImage"):
        return [380, 420]
    slots = wf.widget_slots(info)
    multiline = sum(1 for s in slots if s.kind == "value" and wf.spec_options(s.spec).get("multiline"))
    height = 40 + 22 * max(inputs, outputs) + 26 * (len(slots) - multiline) + 110 * multiline
    return [COLUMN_WIDTH - GAP, height]


def build(workflow: Workflow, object_info: dict) -> dict:
    """The UI-format (0.4) JSON of a description."""
    ids = {node.key: i + 2 for i, node in enumerate(workflow.nodes)}  # 1 is the note
    links: list[list] = []
    built: dict[str, dict] = {}
    depth: dict[str, int] = {}
    for node in workflow.nodes:
        info = object_info[node.type]
        sockets = wf.socket_inputs(info)
        unknown = set(node.values) - {name for name, _, _ in wf.ordered_inputs(info)}
        if unknown:
            raise ValueError(f"{workflow.name}: {node.type} has no inputs {sorted(unknown)}")
        inputs, widgets_values = [], []
        for name, kind, optional in sockets:
            value = node.values.get(name)
            if value is None and not optional:
                raise ValueError(f"{workflow.name}: {node.key} ({node.type}) needs input {name}")
            inputs.append({"name": name, "type": kind, "link": value})
        for slot in wf.widget_slots(info):
            value = node.values.get(slot.name, wf.spec_options(slot.spec).get("default"))
            if slot.kind == "control":
                widgets_values.append("fixed")
            elif slot.kind == "upload":
                widgets_values.append("image")
            elif isinstance(value, tuple):  # a widget fed by a link: the socket carries the value
                inputs.append({"name": slot.name, "type": wf.spec_type(slot.spec), "widget": {"name": slot.name},
                               "link": value})
                widgets_values.append(wf.spec_options(slot.spec).get("default", ""))
            else:
                widgets_values.append(value)
        for index, socket in enumerate(inputs):  # links become ids
            if socket["link"] is not None:
                src_key, src_slot = socket["link"]
                link_id = len(links) + 1
                links.append([link_id, ids[src_key], src_slot, ids[node.key], index, socket["type"]])
                built[src_key]["outputs"][src_slot]["links"].append(link_id)
                socket["link"] = link_id
        depth[node.key] = 1 + max((depth[v[0]] for v in node.values.values() if isinstance(v, tuple)), default=-1)
        outputs = [{"name": name, "type": kind, "links": []}
                   for name, kind in zip(info["output_name"], info["output"])]
        ours = info.get("python_module", "").startswith(f"custom_nodes.{PACK_ID}")
        properties = {"Node name for S&R": node.type, "cnr_id": PACK_ID if ours else "comfy-core",
                      "ver": pack_version() if ours else CORE_VERSION}
        files = [MODELS[v] + (v,) for v in widgets_values if isinstance(v, str) and v in MODELS]
        if files:
            properties["models"] = [{"name": name, "url": url, "directory": directory} for url, directory, name in files]
        built[node.key] = {
            "id": ids[node.key], "type": node.type, "pos": [0, 0],
            "size": node_size(node.type, info, len(inputs), len(outputs)), "flags": {}, "order": 0, "mode": 0,
            "inputs": inputs, "outputs": outputs, "properties": properties, "widgets_values": widgets_values,
        }
        if node.title:
            built[node.key]["title"] = node.title
    layout(built, depth, [n.key for n in workflow.nodes])
    note = {"id": 1, "type": "MarkdownNote", "pos": [-NOTE_SIZE[0] - GAP, 0], "size": NOTE_SIZE, "flags": {},
            "order": 0, "mode": 0, "inputs": [], "outputs": [], "properties": {},
            "widgets_values": [workflow.note], "color": "#432", "bgcolor": "#653"}
    for order, key in enumerate(sorted(built, key=lambda k: (depth[k], ids[k])), start=1):
        built[key]["order"] = order  # a topological execution order, as the frontend saves it
    nodes = [note] + list(built.values())
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"negguide/workflows/{workflow.name}")), "revision": 0,
        "last_node_id": len(nodes), "last_link_id": len(links), "nodes": nodes, "links": links,
        "groups": [], "config": {}, "extra": {"ds": wf.fit_view(nodes)}, "version": wf.UI_VERSION,
    }


def layout(built: dict, depth: dict, keys: list[str]) -> None:
    """Columns by graph depth, nodes stacked in description order within a column."""
    tops: dict[int, int] = {}
    for key in keys:
        column = depth[key]
        top = tops.get(column, 0)
        built[key]["pos"] = [column * COLUMN_WIDTH, top]
        tops[column] = top + built[key]["size"][1] + GAP + 30  # + the title bar


def pack_version() -> str:
    import tomllib

    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]


# ------------------------------------------------------------------------------ thumbnails


def wrap(draw, text: str, font, width: float) -> list[str]:
    """``text`` broken into lines no wider than ``width`` (a longer single word stays whole)."""
    lines = [""]
    for word in text.split():
        candidate = (lines[-1] + " " + word).strip()
        if draw.textlength(candidate, font=font) > width and lines[-1]:
            lines.append(word)
        else:
            lines[-1] = candidate
    return lines


def thumbnail(workflow: Workflow, path: Path) -> None:
    """A 512 x 384 card: method, model and the chain of nodes; the CPU-runnable ones say so."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (512, 384), (32, 36, 48))
    draw = ImageDraw.Draw(image)
    try:
        big = ImageFont.truetype("DejaVuSans-Bold.ttf", 28)
        small = ImageFont.truetype("DejaVuSans.ttf", 18)
    except OSError:
        big = small = ImageFont.load_default()
    draw.rectangle([0, 0, 512, 8], fill=(240, 170, 60))
    draw.text((24, 30), "NegGuide", font=small, fill=(240, 170, 60))
    if wf.CPU_DEMO_MARK in workflow.name:
        draw.rounded_rectangle([300, 24, 488, 54], radius=8, fill=(60, 150, 90))
        draw.text((394, 39), "CPU, no downloads", font=small, fill=(245, 245, 245), anchor="mm")
    y = 60
    for line in wrap(draw, workflow.method, big, 464):
        draw.text((24, y), line, font=big, fill=(245, 245, 245))
        y += 36
    draw.text((24, y + 6), workflow.model, font=small, fill=(190, 200, 220))
    count = len(workflow.chain)
    box_w = (512 - 48 - 24 * (count - 1)) // count
    for i, label in enumerate(workflow.chain):
        x = 24 + i * (box_w + 24)
        draw.rounded_rectangle([x, 230, x + box_w, 320], radius=10, outline=(120, 170, 240), width=3,
                               fill=(48, 56, 76))
        lines = wrap(draw, label, small, box_w - 12)[:3]
        for j, line in enumerate(lines):
            draw.text((x + box_w / 2, 275 + (j - (len(lines) - 1) / 2) * 22), line, font=small,
                      fill=(235, 235, 235), anchor="mm")
        if i:
            draw.line([x - 20, 275, x - 4, 275], fill=(240, 170, 60), width=4)
    image.save(path, quality=90)


def main() -> None:
    with ComfyServer(extra_args=["--disable-api-nodes"]) as server:
        object_info = server.object_info()
    for workflow in all_workflows():
        path = wf.WORKFLOWS_DIR / f"{workflow.name}.json"
        path.write_text(json.dumps(build(workflow, object_info), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        thumbnail(workflow, wf.thumbnail(path))
        print(f"wrote {path.relative_to(REPO_ROOT)} (+ .jpg)")


if __name__ == "__main__":
    main()
