"""A tiny random BLIP-2 (transformers Blip2ForConditionalGeneration with an OPT text model),
saved with save_pretrained, for tests of the BLIP-2 nodes: a real model directory as a user would
put into models/blip2, built offline.

Tokenizer: a word-level vocabulary built with the ``tokenizers`` library, with OPT's special-token
ids (<s>=0, <pad>=1, </s>=2, <unk>=3) and the BOS prepended like OPT's tokenizer, wrapped in
PreTrainedTokenizerFast; Blip2Processor adds its <image> token itself."""

from __future__ import annotations

import torch

WORDS = ("a white home with garage red cat dog tree car photo of the on in blue green grass sky "
         "man woman street house field water bird flower table chair window").split()


def build_tiny_blip2(directory: str, seed: int = 0) -> None:
    """Write a random BLIP-2 model directory (config, weights, processor, tokenizer)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor,
                              PreTrainedTokenizerFast)

    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="</s> $A", special_tokens=[("</s>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="</s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    processor = Blip2Processor(image_processor, tokenizer, num_query_tokens=4)
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                            encoder_hidden_size=32, vocab_size=64),
        text_config=dict(model_type="opt", vocab_size=image_token + 1, hidden_size=32, num_hidden_layers=1,
                         ffn_dim=64, num_attention_heads=2, word_embed_proj_dim=32, max_position_embeddings=64,
                         bos_token_id=2, eos_token_id=2, pad_token_id=1),
        num_query_tokens=4,
        image_token_index=image_token,
    )
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    with torch.no_grad():  # random weights: special tokens get logit 0, below the best word: non-empty captions
        model.language_model.get_output_embeddings().weight[[0, 1, 2, 3, image_token]] = 0.0  # logit 0 < the best word
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
