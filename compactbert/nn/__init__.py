"""The network: layers, the one shared encoder core, heads and inference kernels. It reads only an
`EncoderSpec` (spec.py), never a family's config, and imports nothing else of compactbert."""
