"""MuseTalk 1.5 in pure torch: the reference's networks (SD-1.x UNet, the SD VAE, the whisper-tiny encoder, BiSeNet)
with layer names equal to the checkpoint keys, and its data path step by step (crop, audio prompts, encode,
denoise, decode, paste). The user's downloaded weights load strictly; nothing is ever downloaded."""
