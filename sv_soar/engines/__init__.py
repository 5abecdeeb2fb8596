"""Generation engines behind `sv_soar.generation.GenerationEngine`."""
