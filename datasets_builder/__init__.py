"""Everything that makes data: SynthCampus, dataset readers, the text-corpus builder."""
