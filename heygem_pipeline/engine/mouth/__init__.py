"""The presenter's own mouth: geometry from landmarks, the warp that opens it, the interior and the mouth bank."""
