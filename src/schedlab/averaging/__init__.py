"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion
Models", EDM2): track power-function EMAs while training, store their snapshots, and form the
average of any other length afterwards, without training again.

``profiles`` holds the mathematics (numpy only), ``tracking`` the EMAs a run keeps while it
trains (torch), ``reconstruct`` the averaged weights of a chosen length.
"""
