"""medocr's worker side: settings, the consume → recognise → publish → commit loop, engines."""
