//! Images on a model with a vision projector: a second `FROM` file in the Modelfile (an mmproj
//! GGUF, architecture `clip`) becomes a projector layer, the runner loads it with llama.cpp's
//! mtmd, and the images of generate, chat and the OpenAI layer are read at their place in the
//! prompt. No small vision model is published on the package registries, so the projector is
//! a synthetic one for the real model (see `write_vision_projector`): its answers mean
//! nothing, but each image is decoded, encoded and evaluated for real.

use base64::Engine as _;
use herd_tests::{chat_body, generate_body, png, write_vision_projector, TestServer, MODEL, PROJECTOR_IMAGE_TOKENS};
use serde_json::{json, Value};

/// Gemma 3 270M's embedding width, which the projector's output must have.
const GEMMA_WIDTH: u64 = 640;

/// `<start_of_image>` and `<end_of_image>`, which mtmd puts around Gemma's image tokens.
const IMAGE_WRAPPING_TOKENS: u64 = 2;

const VISION_MODEL: &str = "gemma3-vision";

fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn red() -> String {
    base64_of(&png(32, 32, |_, _| [220, 30, 30]))
}

fn board_pixel(x: u32, y: u32) -> [u8; 3] {
    if (x / 8 + y / 8).is_multiple_of(2) {
        [0, 0, 0]
    } else {
        [255, 255, 255]
    }
}

fn checkerboard() -> String {
    base64_of(&png(64, 48, board_pixel))
}

/// The checkerboard as a lossless WebP (so the same pixels as the PNG), with an opaque alpha
/// channel or without one.
fn checkerboard_webp(alpha: bool) -> Vec<u8> {
    let (width, height) = (64, 48);
    let mut pixels = Vec::new();
    for y in 0..height {
        for x in 0..width {
            pixels.extend(board_pixel(x, y));
            if alpha {
                pixels.push(255);
            }
        }
    }
    let color = if alpha {
        image_webp::ColorType::Rgba8
    } else {
        image_webp::ColorType::Rgb8
    };
    let mut file = Vec::new();
    image_webp::WebPEncoder::new(&mut file)
        .encode(&pixels, width, height, color)
        .unwrap();
    file
}

/// A server with the real model, and the vision model made of it and the synthetic projector.
fn vision_server() -> TestServer {
    let s = TestServer::with_model();
    let dir = tempfile::tempdir().unwrap();
    write_vision_projector(&dir.path().join("mmproj.gguf"), GEMMA_WIDTH);
    std::fs::write(
        dir.path().join("Modelfile"),
        format!("FROM {MODEL}\nFROM ./mmproj.gguf\n"),
    )
    .unwrap();
    let out = s.cli(&[
        "create",
        VISION_MODEL,
        "-f",
        dir.path().join("Modelfile").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    s
}

fn generate(s: &TestServer, images: &[String]) -> Value {
    let body = generate_body(
        "Describe the picture.",
        json!({"model": VISION_MODEL, "stream": false, "images": images,
               "options": {"temperature": 0, "num_predict": 12}}),
    );
    let (status, body) = s.post("/api/generate", &body);
    assert_eq!(status, 200, "{body}\n{}", s.log());
    body
}

#[test]
fn a_projector_is_stored_as_its_layer_and_reported_as_vision() {
    let s = vision_server();
    let manifest = std::fs::read_to_string(
        s.models_dir
            .path()
            .join(format!("manifests/registry.ollama.ai/library/{VISION_MODEL}/latest")),
    )
    .unwrap();
    let manifest: Value = serde_json::from_str(&manifest).unwrap();
    let kinds: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"application/vnd.ollama.image.projector"), "{kinds:?}");
    assert!(kinds.contains(&"application/vnd.ollama.image.model"), "{kinds:?}");
    assert!(kinds.contains(&"application/vnd.ollama.image.template"), "{kinds:?}");

    let (_, show) = s.post("/api/show", &json!({"model": VISION_MODEL}));
    let capabilities = show["capabilities"].as_array().unwrap();
    assert!(capabilities.contains(&json!("vision")), "{show}");
    assert_eq!(show["projector_info"]["general.architecture"], "clip", "{show}");
    assert_eq!(show["projector_info"]["clip.projector_type"], "gemma3", "{show}");
    assert_eq!(
        show["modelfile"].as_str().unwrap().matches("\nFROM /").count(),
        2,
        "{show}"
    );
    let (_, show) = s.post("/api/show", &json!({"model": MODEL}));
    assert!(
        !show["capabilities"].as_array().unwrap().contains(&json!("vision")),
        "{show}"
    );
    assert!(show.get("projector_info").is_none(), "{show}");
}

#[test]
fn images_are_read_in_place_on_generate_chat_and_openai() {
    let s = vision_server();
    // Each image takes its tokens in the prompt, and what the model sees changes its answer
    // (greedy decoding: the same image answers the same).
    let text_only = generate(&s, &[]);
    let with_red = generate(&s, &[red()]);
    let with_board = generate(&s, &[checkerboard()]);
    let prompt_tokens = |body: &Value| body["prompt_eval_count"].as_u64().unwrap();
    assert_eq!(
        prompt_tokens(&with_red),
        prompt_tokens(&text_only) + PROJECTOR_IMAGE_TOKENS + IMAGE_WRAPPING_TOKENS,
        "{with_red}\n{text_only}"
    );
    assert_eq!(prompt_tokens(&with_board), prompt_tokens(&with_red));
    assert_ne!(
        with_red["response"], with_board["response"],
        "the image changed nothing"
    );
    assert_ne!(with_red["response"], text_only["response"]);
    assert_eq!(generate(&s, &[red()])["response"], with_red["response"]);
    // WebP, which llama.cpp cannot read, is decoded by the runner: the same pixels answer the same.
    for alpha in [false, true] {
        let with_webp = generate(&s, &[base64_of(&checkerboard_webp(alpha))]);
        assert_eq!(prompt_tokens(&with_webp), prompt_tokens(&with_board));
        assert_eq!(with_webp["response"], with_board["response"], "alpha: {alpha}");
    }
    let two = generate(&s, &[red(), checkerboard()]);
    assert_eq!(
        prompt_tokens(&two),
        prompt_tokens(&text_only) + 2 * (PROJECTOR_IMAGE_TOKENS + IMAGE_WRAPPING_TOKENS)
    );
    // `context` holds text tokens only, and a text request on the same runner is unaffected.
    assert!(with_red["context"]
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t.as_i64().unwrap() >= 0));
    assert_eq!(generate(&s, &[])["response"], text_only["response"]);

    // Chat: the image goes before the text of its message, or where the text says [img].
    let chat = |content: &str, images: &[String]| {
        let body = chat_body(
            content,
            json!({"model": VISION_MODEL, "stream": false, "options": {"temperature": 0, "num_predict": 12}}),
        );
        let mut body = body;
        body["messages"][0]["images"] = json!(images);
        let (status, body) = s.post("/api/chat", &body);
        assert_eq!(status, 200, "{body}\n{}", s.log());
        body
    };
    let plain = chat("What is in it?", &[]);
    let seen = chat("What is in it?", &[checkerboard()]);
    assert_eq!(
        prompt_tokens(&seen),
        prompt_tokens(&plain) + PROJECTOR_IMAGE_TOKENS + IMAGE_WRAPPING_TOKENS
    );
    assert_ne!(seen["message"]["content"], plain["message"]["content"]);
    let (status, debug) = s.post(
        "/api/chat",
        &json!({"model": VISION_MODEL, "_debug_render_only": true, "messages": [
            {"role": "user", "content": "Left [img] right", "images": [red(), checkerboard()]}]}),
    );
    assert_eq!(status, 200, "{debug}");
    assert_eq!(debug["_debug_info"]["image_count"], 2, "{debug}");
    let rendered = debug["_debug_info"]["rendered_template"].as_str().unwrap();
    assert!(rendered.contains("[img-1]Left [img-0] right"), "{rendered}");

    // Streamed, through the OpenAI layer, with a data URI.
    let (status, chunks) = s.post_stream(
        "/api/generate",
        &json!({"model": VISION_MODEL, "prompt": "Describe the picture.", "images": [red()],
                "options": {"temperature": 0, "num_predict": 12}}),
    );
    assert_eq!(status, 200);
    let streamed: String = chunks.iter().filter_map(|c| c["response"].as_str()).collect();
    assert_eq!(streamed, with_red["response"].as_str().unwrap());
    let (status, body) = s.post(
        "/v1/chat/completions",
        &json!({"model": VISION_MODEL, "temperature": 0, "max_tokens": 8, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in it?"},
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", checkerboard())}}]}]}),
    );
    assert_eq!(status, 200, "{body}");
    let (_, plain) = s.post(
        "/v1/chat/completions",
        &json!({"model": VISION_MODEL, "temperature": 0, "max_tokens": 8,
                "messages": [{"role": "user", "content": "What is in it?"}]}),
    );
    assert_eq!(
        body["usage"]["prompt_tokens"].as_u64().unwrap(),
        plain["usage"]["prompt_tokens"].as_u64().unwrap() + PROJECTOR_IMAGE_TOKENS + IMAGE_WRAPPING_TOKENS,
        "{body}\n{plain}"
    );
}

#[test]
fn the_next_turn_of_a_chat_with_an_image_reuses_its_cache() {
    let s = vision_server();
    let chat = |messages: &Value| {
        let (status, body) = s.post(
            "/api/chat",
            &json!({"model": VISION_MODEL, "stream": false, "messages": messages,
                    "options": {"temperature": 0, "num_predict": 8}}),
        );
        assert_eq!(status, 200, "{body}\n{}", s.log());
        body
    };
    // The tokens the cache served, as the runner logs them: the most since `seen` lines.
    let reuses = || -> Vec<u64> {
        s.log()
            .lines()
            .filter(|l| l.contains("reused a cached prompt prefix with images"))
            .map(|l| {
                l.split("tokens=")
                    .nth(1)
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect()
    };
    let reused_since = |seen: usize| reuses().into_iter().skip(seen).max().unwrap_or(0);
    let turn = |image: String| {
        json!([
            {"role": "user", "content": "What is in it?", "images": [image]},
            {"role": "assistant", "content": "A picture."},
            {"role": "user", "content": "And what colours?"},
        ])
    };
    let first = chat(&json!([turn(checkerboard())[0]]));
    // The next turn: everything up to the answer, image included, comes from the cache.
    let seen = reuses().len();
    let warm = chat(&turn(checkerboard()));
    let reused = reused_since(seen);
    let first_prompt = first["prompt_eval_count"].as_u64().unwrap();
    assert!(
        reused + 1 >= first_prompt,
        "reused {reused} of the first turn's {first_prompt} tokens\n{}",
        s.log()
    );
    // The same as evaluated cold, once another prompt has taken the one slot's cache (the
    // text before the image may still be served).
    chat(&json!([{"role": "user", "content": "Something else entirely."}]));
    let seen = reuses().len();
    let cold = chat(&turn(checkerboard()));
    assert!(reused_since(seen) < 10, "the cold turn reused its image:\n{}", s.log());
    assert_eq!(cold["message"], warm["message"]);
    assert_eq!(cold["prompt_eval_count"], warm["prompt_eval_count"]);
    // Another image at the same place is not taken for the cached one.
    let seen = reuses().len();
    let other = chat(&turn(red()));
    assert!(reused_since(seen) < 10, "a different image was served from the cache");
    assert_ne!(other["message"], cold["message"]);
}

#[test]
fn images_that_cannot_be_used_are_refused_and_the_runner_goes_on() {
    let s = vision_server();
    let good = red();
    // A PNG signature with nothing after it passes the server's check; the runner cannot
    // decode it, and says so as a 400 naming the image.
    let truncated = base64_of(&png(8, 8, |_, _| [1, 2, 3])[..40]);
    for images in [vec![truncated.clone()], vec![good.clone(), truncated.clone()]] {
        let (status, body) = s.post(
            "/api/generate",
            &generate_body("hi", json!({"model": VISION_MODEL, "stream": false, "images": images})),
        );
        assert_eq!(status, 400, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("invalid image input") && error.contains("could not be decoded"),
            "{body}"
        );
    }
    // Streamed too: the error comes before the first chunk, so it is the reply's status.
    let (status, lines) = s.post_stream(
        "/api/chat",
        &json!({"model": VISION_MODEL, "messages": [{"role": "user", "content": "hi", "images": [truncated]}]}),
    );
    assert_eq!(status, 400, "{lines:?}");
    assert!(
        lines[0]["error"].as_str().unwrap().contains("could not be decoded"),
        "{lines:?}"
    );
    let (status, body) = s.post(
        "/v1/chat/completions",
        &json!({"model": VISION_MODEL, "stream": true, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{truncated}")}}]}]}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be decoded"),
        "{body}"
    );
    // A raw prompt takes each image at its [img-N] (the rest first), and must not end with one.
    let (status, body) = s.post(
        "/api/generate",
        &json!({"model": VISION_MODEL, "raw": true, "stream": false, "prompt": "Look: [img-0]",
                "images": [good.clone()], "options": {"num_predict": 4}}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("ends with an image"), "{body}");
    let raw = |prompt: &str| {
        let (status, body) = s.post(
            "/api/generate",
            &json!({"model": VISION_MODEL, "raw": true, "stream": false, "prompt": prompt,
                    "images": [good.clone()], "options": {"num_predict": 4, "temperature": 0}}),
        );
        assert_eq!(status, 200, "{body}");
        body["prompt_eval_count"].as_u64().unwrap()
    };
    // One BOS, before the image: the same count wherever the image goes.
    assert_eq!(raw("[img-0]Look at it."), raw("Look at it."));
    assert_eq!(
        raw("Look [img-0] at it."),
        raw("Look at it.") + 1,
        "the split adds at most one text token"
    );
    // A WebP cut short, and one whose header claims 16383 x 16383 pixels (WebP's largest): the
    // runner decodes WebP itself and refuses both, the large one before allocating its pixels.
    let webp = checkerboard_webp(false);
    let mut huge = webp.clone();
    assert_eq!(&huge[12..16], b"VP8L");
    huge[21..25].copy_from_slice(&(0x3ffe_u32 | 0x3ffe << 14).to_le_bytes());
    let refusals = [
        // An image Gemma 3 reads in one batch must fit num_batch.
        (
            json!({"images": [good.clone()], "options": {"num_batch": 2}}),
            "takes 4 tokens, more than num_batch (2)",
        ),
        (json!({"images": ["@@"]}), "images[0] is not base64"),
        (
            json!({"images": [base64_of(b"plain text")]}),
            "images[0] is not a PNG, JPEG, WebP, GIF or BMP image",
        ),
        (
            json!({"images": [base64_of(&webp[..30])]}),
            "images[0] could not be decoded: ",
        ),
        (
            json!({"images": [base64_of(&huge)]}),
            "images[0] could not be decoded: it is 16383 x 16383 pixels, more than the 67108864",
        ),
        // More image tokens than the context leaves room for.
        (
            json!({"images": vec![good.clone(); 8], "options": {"num_ctx": 64, "num_predict": 8}}),
            "more than the 56 a context of 64 leaves",
        ),
    ];
    for (mut request, want) in refusals {
        request["model"] = json!(VISION_MODEL);
        request["stream"] = json!(false);
        let (status, body) = s.post("/api/generate", &generate_body("hi", request));
        assert_eq!(status, 400, "{body}");
        assert!(body["error"].as_str().unwrap().contains(want), "{body}");
    }
    // The same runner still answers.
    let body = generate(&s, &[good]);
    assert!(body["eval_count"].as_u64().unwrap() > 0, "{body}");

    // A projector made for another model fails the load with a clear error.
    let dir = tempfile::tempdir().unwrap();
    write_vision_projector(&dir.path().join("wrong.gguf"), 512);
    std::fs::write(
        dir.path().join("Modelfile"),
        format!("FROM {MODEL}\nFROM ./wrong.gguf\n"),
    )
    .unwrap();
    let out = s.cli(&[
        "create",
        "gemma3-wrong",
        "-f",
        dir.path().join("Modelfile").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, body) = s.post(
        "/api/generate",
        &generate_body("hi", json!({"model": "gemma3-wrong", "stream": false})),
    );
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("unable to load vision projector"),
        "{body}"
    );
    // A projector without a model is refused at create time.
    std::fs::write(dir.path().join("Modelfile"), "FROM ./wrong.gguf\n").unwrap();
    let out = s.cli(&[
        "create",
        "only-projector",
        "-f",
        dir.path().join("Modelfile").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a projector needs a model"),
        "{out:?}"
    );
}
