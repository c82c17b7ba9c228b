"""Datasets: `prepare` turns a tree of talking-head videos into a prepared set; `PreparedDataset` reads it;
`EpisodeDataset` samples K+1-frame episodes for meta-learning; `EpisodeAugment` augments them on the device."""
