//! Builders of small real image trees for the data tests: real JPEG and PNG
//! files written by real encoders, plus the broken kinds a loader must survive.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use image::{ExtendedColorType, ImageEncoder};

/// An RGB picture with a pattern that depends on `seed`, so images differ.
pub fn rgb_pixels(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let v = (x * 3 + y * 5 + seed * 37) % 256;
            out.extend_from_slice(&[v as u8, ((v + 80) % 256) as u8, ((x * y + seed) % 256) as u8]);
        }
    }
    out
}

pub fn jpeg_bytes(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode(&rgb_pixels(w, h, seed), w, h, ExtendedColorType::Rgb8).expect("encode jpeg");
    out
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

pub fn write_jpeg(path: &Path, w: u32, h: u32, seed: u32) {
    write(path, &jpeg_bytes(w, h, seed));
}

/// A grey JPEG (SUN397 has some).
pub fn write_grey_jpeg(path: &Path, w: u32, h: u32) {
    let pixels: Vec<u8> = (0..w * h).map(|i| (i % 251) as u8).collect();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode(&pixels, w, h, ExtendedColorType::L8).expect("encode");
    write(path, &out);
}

/// A CMYK JPEG (Adobe APP14), as some SUN397 pictures are.
pub fn write_cmyk_jpeg(path: &Path, w: u16, h: u16) {
    let pixels: Vec<u8> = (0..u32::from(w) * u32::from(h)).flat_map(|i| [(i % 200) as u8, 40, 90, 10]).collect();
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 85).encode(&pixels, w, h, jpeg_encoder::ColorType::Cmyk).expect("encode cmyk");
    assert_eq!(&out[..2], &[0xFF, 0xD8]);
    write(path, &out);
}

/// A 16-bit RGB PNG.
pub fn write_png16(path: &Path, w: u32, h: u32) {
    let mut pixels = Vec::new();
    for i in 0..w * h * 3 {
        pixels.extend_from_slice(&((i * 997 % 65536) as u16).to_be_bytes());
    }
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(&pixels, w, h, ExtendedColorType::Rgb16).expect("encode png16");
    write(path, &out);
}

/// The first 60% of a valid JPEG.
pub fn write_truncated_jpeg(path: &Path) {
    let full = jpeg_bytes(64, 64, 3);
    write(path, &full[..full.len() * 6 / 10]);
}

/// Starts like a JPEG and ends with an end marker, but the middle is junk.
pub fn write_corrupt_jpeg(path: &Path) {
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x03];
    bytes.extend((0..500u32).map(|i| (i * 7 % 253) as u8));
    bytes.extend_from_slice(&[0xFF, 0xD9]);
    write(path, &bytes);
}

/// A valid PNG header claiming 100,000 x 100,000 pixels: a decompression bomb.
pub fn write_png_bomb(path: &Path) {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut out, b"IEND", &[]);
    write(path, &out);
}

/// Small LFW, SUN397 and KDEF trees with every kind of bad file in them.
pub struct Trees {
    pub lfw: PathBuf,
    pub sun: PathBuf,
    pub kdef: PathBuf,
    pub truncated: PathBuf,
    pub corrupt: PathBuf,
    pub zero: PathBuf,
    pub text: PathBuf,
    pub bomb: PathBuf,
    pub misnamed: PathBuf,
    pub wrong_folder: PathBuf,
    pub cmyk: PathBuf,
    pub png16: PathBuf,
}

pub const LFW_PEOPLE: [(&str, usize); 8] = [
    ("Ada_Lovelace", 3),
    ("Alan_Turing", 2),
    ("Grace_Hopper", 4),
    ("Edsger_Dijkstra", 1),
    ("Barbara_Liskov", 2),
    ("Donald_Knuth", 3),
    ("Frances_Allen", 1),
    ("John_Backus", 2),
];

pub fn build_trees(root: &Path) -> Trees {
    let lfw = root.join("lfw");
    let mut seed = 0;
    for (person, n) in LFW_PEOPLE {
        for i in 1..=n {
            seed += 1;
            write_jpeg(&lfw.join(person).join(format!("{person}_{i:04}.jpg")), 50, 50, seed);
        }
    }
    let truncated = lfw.join("Alan_Turing/Alan_Turing_0003.jpg");
    write_truncated_jpeg(&truncated);
    let zero = lfw.join("Grace_Hopper/Grace_Hopper_0005.jpg");
    write(&zero, b"");
    let text = lfw.join("Ada_Lovelace/Ada_Lovelace_0004.jpg");
    write(&text, b"This is not a picture, it is a note someone saved as .jpg\n");
    let png16 = lfw.join("Donald_Knuth/Donald_Knuth_0004.png");
    write_png16(&png16, 40, 48);

    let sun = root.join("SUN397");
    let categories = ["/a/abbey", "/b/beach", "/f/forest/broadleaf", "/s/street"];
    write(&sun.join("ClassName.txt"), categories.iter().map(|c| format!("{c}\n")).collect::<String>().as_bytes());
    for (ci, c) in categories.iter().enumerate() {
        for i in 0..5 {
            seed += 1;
            write_jpeg(&sun.join(c.trim_start_matches('/')).join(format!("sun_{ci}{i}aaaabbbbccccdd.jpg")), 60 + i * 7, 45 + ci as u32 * 9, seed);
        }
    }
    write_grey_jpeg(&sun.join("s/street/sun_greyaaaabbbbccc.jpg"), 70, 50);
    let cmyk = sun.join("b/beach/sun_cmykaaaabbbbccc.jpg");
    write_cmyk_jpeg(&cmyk, 64, 48);
    let corrupt = sun.join("a/abbey/sun_corruptaaabbbbc.jpg");
    write_corrupt_jpeg(&corrupt);
    let bomb = sun.join("a/abbey/sun_bombaaaabbbbcccc.png");
    write_png_bomb(&bomb);

    let kdef = root.join("KDEF");
    for subject in 1..=6u8 {
        for sex in ['F', 'M'] {
            let folder = format!("A{sex}{subject:02}");
            for e in ["AF", "AN", "DI", "HA", "NE", "SA", "SU"] {
                for angle in ["S", "HL"] {
                    seed += 1;
                    let ext = if subject % 2 == 0 { "JPG" } else { "jpg" };
                    write_jpeg(&kdef.join(&folder).join(format!("{folder}{e}{angle}.{ext}")), 40, 54, seed);
                }
            }
        }
    }
    let misnamed = kdef.join("AF01/AF01XXS.JPG");
    write_jpeg(&misnamed, 40, 54, 999);
    let wrong_folder = kdef.join("AF01/AF02HAS.JPG");
    write_jpeg(&wrong_folder, 40, 54, 998);
    Trees { lfw, sun, kdef, truncated, corrupt, zero, text, bomb, misnamed, wrong_folder, cmyk, png16 }
}

/// Runs the real binary, printing the command and its output (shown on failure).
pub fn emotionet(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_emotionet")).args(args).output().expect("run emotionet");
    eprintln!(
        "$ emotionet {}\n--- status {:?}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
