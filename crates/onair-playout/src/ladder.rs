//! The ABR ladder: the renditions every asset is transcoded into. One ladder
//! per station, because a linear channel stitches assets together and players
//! break when a rendition changes shape between items (AWS Channel Assembly
//! refuses per-title ladders for the same reason).

use std::fmt;

/// One rung of the ladder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenditionSpec {
    /// The rendition's name, also its folder in URLs (`360p`).
    pub name: String,
    /// The frame width, in pixels.
    pub width: u32,
    /// The frame height, in pixels.
    pub height: u32,
    /// The video bit rate, in kbit/s.
    pub video_kbps: u32,
}

/// The station's ladder, highest rung first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ladder {
    /// The rungs, highest first.
    pub renditions: Vec<RenditionSpec>,
    /// One audio layout for every rendition: stereo AAC at this rate.
    pub audio_kbps: u32,
}

/// The codecs every rendition carries: H.264 High 4.0 and AAC-LC, forced at
/// encode time so the master playlist can name them without probing.
pub const CODECS: &str = "avc1.640028,mp4a.40.2";

impl Ladder {
    /// Parses `NAME:WIDTHxHEIGHT:KBPS,…`, e.g. `720p:1280x720:2800,360p:640x360:800`.
    pub fn parse(text: &str, audio_kbps: u32) -> Result<Ladder, String> {
        let mut renditions = Vec::new();
        for rung in text
            .split(',')
            .map(str::trim)
            .filter(|rung| !rung.is_empty())
        {
            let parts: Vec<&str> = rung.split(':').collect();
            let [name, size, kbps] = parts.as_slice() else {
                return Err(format!("rung {rung:?} is not NAME:WIDTHxHEIGHT:KBPS"));
            };
            let valid_name = !name.is_empty()
                && name.len() <= 32
                && name
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
            if !valid_name {
                return Err(format!(
                    "rendition name {name:?} must be letters, digits, - or _"
                ));
            }
            let Some((width, height)) = size.split_once('x') else {
                return Err(format!("size {size:?} is not WIDTHxHEIGHT"));
            };
            let width: u32 = width
                .parse()
                .map_err(|_| format!("width {width:?} is not a number"))?;
            let height: u32 = height
                .parse()
                .map_err(|_| format!("height {height:?} is not a number"))?;
            // H.264 in 4:2:0 needs even sizes.
            if width < 16 || height < 16 || width % 2 == 1 || height % 2 == 1 {
                return Err(format!(
                    "size {size:?} must be even and at least 16x16 pixels"
                ));
            }
            let video_kbps: u32 =
                kbps.parse().ok().filter(|kbps| *kbps > 0).ok_or_else(|| {
                    format!("bit rate {kbps:?} is not a positive number of kbit/s")
                })?;
            if renditions
                .iter()
                .any(|known: &RenditionSpec| known.name == *name)
            {
                return Err(format!("rendition name {name:?} appears twice"));
            }
            renditions.push(RenditionSpec {
                name: (*name).to_owned(),
                width,
                height,
                video_kbps,
            });
        }
        if renditions.is_empty() {
            return Err("the ladder has no rendition".to_owned());
        }
        if audio_kbps == 0 {
            return Err("the audio bit rate must be positive".to_owned());
        }
        Ok(Ladder {
            renditions,
            audio_kbps,
        })
    }

    /// The rendition names, in ladder order.
    pub fn names(&self) -> Vec<String> {
        self.renditions
            .iter()
            .map(|rendition| rendition.name.clone())
            .collect()
    }

    /// The rung of that name, if the ladder has one.
    pub fn rendition(&self, name: &str) -> Option<&RenditionSpec> {
        self.renditions
            .iter()
            .find(|rendition| rendition.name == name)
    }
}

impl RenditionSpec {
    /// The peak bit rate a master playlist announces: video and audio, plus
    /// a tenth for the MPEG-TS overhead.
    pub fn bandwidth(&self, audio_kbps: u32) -> u32 {
        (self.video_kbps + audio_kbps) * 1100
    }
}

impl fmt::Display for Ladder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rungs: Vec<String> = self
            .renditions
            .iter()
            .map(|rung| {
                format!(
                    "{}:{}x{}:{}",
                    rung.name, rung.width, rung.height, rung.video_kbps
                )
            })
            .collect();
        f.write_str(&rungs.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_ladder() {
        let ladder = Ladder::parse("720p:1280x720:2800, 360p:640x360:800", 128).unwrap();
        assert_eq!(ladder.names(), vec!["720p", "360p"]);
        assert_eq!(ladder.renditions[1].height, 360);
        assert_eq!(ladder.to_string(), "720p:1280x720:2800,360p:640x360:800");
    }

    #[test]
    fn refuses_bad_rungs() {
        for bad in [
            "",
            "720p:1280x720",
            "720p:1280:2800",
            "a/b:640x360:800",
            "x:641x360:800",
            "x:640x360:0",
            "x:640x360:800,x:320x180:300",
        ] {
            assert!(Ladder::parse(bad, 128).is_err(), "{bad:?} was accepted");
        }
    }
}
