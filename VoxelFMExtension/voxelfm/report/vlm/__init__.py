"""The reference's report head, headless: perceiver resampler + MLP projector into a causal LM (optional extra).

    pip install voxelfm[vlm]          # transformers + peft

``report-train`` fits it in two stages (resampler + projector with the LM frozen; then LoRA r16/alpha32 on
the LM's attention and MLP projections) and saves a run; ``voxelfm report --vlm RUN`` drafts with it. The
modules that need transformers/peft import them through ``deps.require_vlm()``, which names the extra when
they are missing, so the rest of voxelfm never needs them.
"""
