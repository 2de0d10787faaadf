"""Getting each YTID's audio: the download stage (yt-dlp) and its failure classes."""
