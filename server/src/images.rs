//! Images in requests: checked before anything loads, then placed in the prompt. While the
//! template renders, each image is a marker that no request can contain (it carries a random
//! nonce); after rendering the markers are cut out and their offsets go to the runner.

use std::hash::{BuildHasher, Hasher};

use base64::Engine as _;
use herd_proto::{ImageFormat, PromptImage};

use crate::error::HerdError;

/// Checks that each image is base64 of an image file the vision runner decodes.
pub fn check_images(images: &[String]) -> Result<(), HerdError> {
    for (i, image) in images.iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(image.trim())
            .map_err(|e| HerdError::bad_request(format!("invalid image input: images[{i}] is not base64: {e}")))?;
        if ImageFormat::sniff(&bytes).is_none() {
            return Err(HerdError::bad_request(format!(
                "invalid image input: images[{i}] is not a PNG, JPEG, WebP, GIF or BMP image"
            )));
        }
    }
    Ok(())
}

/// The images of one request and the markers that stand for them in its messages.
pub struct ImageMarkers {
    /// Every marker starts so: `<herd-image-NONCE-` then the image's index and `>`.
    opening: String,
    images: Vec<String>,
}

impl Default for ImageMarkers {
    fn default() -> Self {
        let nonce = std::collections::hash_map::RandomState::new().build_hasher().finish();
        Self {
            opening: format!("<herd-image-{nonce:016x}-"),
            images: Vec::new(),
        }
    }
}

impl ImageMarkers {
    /// How many images were placed.
    pub fn count(&self) -> usize {
        self.images.len()
    }

    /// How many images `rendered` holds.
    pub fn count_in(&self, rendered: &str) -> usize {
        self.cut(rendered).1.len()
    }

    /// A raw prompt with a marker for each of `images`, as Ollama's raw mode places them:
    /// where the prompt says `[img-N]` for image N, the rest first.
    pub fn place_raw(&mut self, prompt: &str, images: &[String]) -> String {
        let mut prompt = prompt.to_string();
        let mut before = String::new();
        for (n, image) in images.iter().enumerate() {
            let marker = format!("{}{}>", self.opening, self.images.len());
            let tag = format!("[img-{n}]");
            if prompt.contains(&tag) {
                prompt = prompt.replacen(&tag, &marker, 1);
            } else {
                before.push_str(&marker);
            }
            self.images.push(image.clone());
        }
        before + &prompt
    }

    /// `content` with a marker for each of `images`, as Ollama places them: at each `[img]`
    /// the content has, the rest before its text.
    pub fn place(&mut self, content: &str, images: &[String]) -> String {
        let mut content = content.to_string();
        let mut before = String::new();
        for image in images {
            let marker = format!("{}{}>", self.opening, self.images.len());
            if content.contains("[img]") {
                content = content.replacen("[img]", &marker, 1);
            } else {
                before.push_str(&marker);
            }
            self.images.push(image.clone());
        }
        before + &content
    }

    /// The rendered prompt without its markers, and the images the template kept, each at
    /// its offset in that prompt.
    pub fn extract(&self, rendered: &str) -> (String, Vec<PromptImage>) {
        let (prompt, placed) = self.cut(rendered);
        let images = placed
            .into_iter()
            .map(|(offset, index)| PromptImage {
                offset,
                data: self.images[index].clone(),
            })
            .collect();
        (prompt, images)
    }

    /// The rendered prompt as Ollama's `_debug_render_only` shows it: `[img-N]` where the
    /// request's image N is.
    pub fn display(&self, rendered: &str) -> String {
        let (prompt, placed) = self.cut(rendered);
        let mut shown = String::with_capacity(prompt.len());
        let mut from = 0;
        for (offset, index) in placed {
            shown.push_str(&prompt[from..offset]);
            shown.push_str(&format!("[img-{index}]"));
            from = offset;
        }
        shown.push_str(&prompt[from..]);
        shown
    }

    /// `rendered` without its markers, and the (offset, image index) of each, in order.
    fn cut(&self, rendered: &str) -> (String, Vec<(usize, usize)>) {
        let mut prompt = String::with_capacity(rendered.len());
        let mut placed = Vec::new();
        let mut rest = rendered;
        while let Some(at) = rest.find(&self.opening) {
            prompt.push_str(&rest[..at]);
            let after = &rest[at + self.opening.len()..];
            let marker = after
                .find('>')
                .and_then(|end| Some((after[..end].parse::<usize>().ok()?, end)))
                .filter(|(index, _)| *index < self.images.len());
            match marker {
                Some((index, end)) => {
                    placed.push((prompt.len(), index));
                    rest = &after[end + 1..];
                }
                None => {
                    prompt.push_str(&self.opening);
                    rest = after;
                }
            }
        }
        prompt.push_str(rest);
        (prompt, placed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &str = "iVBORw0KGgo=";

    #[test]
    fn images_go_before_the_text_or_at_each_img_tag() {
        let mut markers = ImageMarkers::default();
        let first = markers.place("what is this?", &["A".into(), "B".into()]);
        let second = markers.place("compare [img] with the others", &["C".into()]);
        let (prompt, placed) = markers.extract(&format!("<user>{first}</user><user>{second}</user>"));
        assert_eq!(
            prompt,
            "<user>what is this?</user><user>compare  with the others</user>"
        );
        let at: Vec<(usize, &str)> = placed.iter().map(|p| (p.offset, p.data.as_str())).collect();
        assert_eq!(at, [(6, "A"), (6, "B"), (40, "C")]);
        assert_eq!(
            markers.display(&format!("{first}|{second}")),
            "[img-0][img-1]what is this?|compare [img-2] with the others"
        );
        let mut markers = ImageMarkers::default();
        let content = markers.place("Left [img] right", &["A".into(), "B".into()]);
        assert_eq!(markers.display(&content), "[img-1]Left [img-0] right");
        let (_, placed) = markers.extract(&content);
        assert_eq!(placed.iter().map(|p| p.data.as_str()).collect::<Vec<_>>(), ["B", "A"]);
    }

    #[test]
    fn raw_prompts_place_images_at_their_numbered_tags() {
        let mut markers = ImageMarkers::default();
        let prompt = markers.place_raw("see [img-1] then [img-0].", &["A".into(), "B".into(), "C".into()]);
        assert_eq!(markers.display(&prompt), "[img-2]see [img-1] then [img-0].");
        let (text, placed) = markers.extract(&prompt);
        assert_eq!(text, "see  then .");
        let at: Vec<(usize, &str)> = placed.iter().map(|p| (p.offset, p.data.as_str())).collect();
        assert_eq!(at, [(0, "C"), (4, "B"), (10, "A")]);
        assert_eq!(markers.count_in(&prompt), 3);
    }

    #[test]
    fn text_that_looks_like_a_marker_stays_text() {
        let mut markers = ImageMarkers::default();
        let placed = markers.place("hi", &["A".into()]);
        let forged = format!("{}7> and {}x>", markers.opening, markers.opening);
        let (prompt, images) = markers.extract(&format!("{forged}{placed}"));
        assert_eq!(prompt, format!("{forged}hi"));
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].offset, forged.len());
        // Another request's markers are only text here.
        let other = ImageMarkers::default();
        assert_ne!(other.opening, markers.opening);
        assert_eq!(other.extract(&placed).1, []);
    }

    #[test]
    fn images_are_checked_for_base64_and_an_image_format() {
        assert!(check_images(&[PNG.into(), "/9j/4AAQ".into()]).is_ok());
        let error = |image: &str| check_images(&[PNG.into(), image.into()]).unwrap_err().to_string();
        assert!(error("@@@").contains("images[1] is not base64"), "{}", error("@@@"));
        assert!(error("aGVsbG8gd29ybGQ=").contains("images[1] is not a PNG, JPEG, WebP, GIF or BMP image"));
        assert!(
            check_images(&["UklGRiQAAABXRUJQVlA4IA==".into()]).is_ok(),
            "a WebP header"
        );
        assert!(
            error("UklGRiQAAABBVkkgTElTVA==").contains("is not a PNG"),
            "a RIFF file that is not WebP"
        );
    }
}
