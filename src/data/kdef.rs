//! KDEF and AKDEF file-name codes: session, sex, subject, expression and
//! camera angle, parsed into typed values. This module only parses names; the
//! folder walking lives in `loaders::kdef`.
//!
//! KDEF: `AF01ANS.JPG` = session A, female, subject 01, angry, straight.
//! AKDEF: `FAFFL.JPG` = (averaged) female, afraid, full left profile.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The seven KDEF expressions, in code order (AF, AN, DI, HA, NE, SA, SU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expression {
    Afraid,
    Angry,
    Disgusted,
    Happy,
    Neutral,
    Sad,
    Surprised,
}

impl Expression {
    pub const ALL: [Expression; 7] =
        [Expression::Afraid, Expression::Angry, Expression::Disgusted, Expression::Happy, Expression::Neutral, Expression::Sad, Expression::Surprised];

    /// The two-letter KDEF code (`HA`).
    pub const fn code(self) -> &'static str {
        match self {
            Expression::Afraid => "AF",
            Expression::Angry => "AN",
            Expression::Disgusted => "DI",
            Expression::Happy => "HA",
            Expression::Neutral => "NE",
            Expression::Sad => "SA",
            Expression::Surprised => "SU",
        }
    }

    /// The English name (`happy`).
    pub const fn name(self) -> &'static str {
        match self {
            Expression::Afraid => "afraid",
            Expression::Angry => "angry",
            Expression::Disgusted => "disgusted",
            Expression::Happy => "happy",
            Expression::Neutral => "neutral",
            Expression::Sad => "sad",
            Expression::Surprised => "surprised",
        }
    }

    pub fn from_code(code: &str) -> Option<Expression> {
        Expression::ALL.into_iter().find(|e| e.code() == code)
    }

    /// Accepts a code (`HA`, any case) or a name (`happy`), plus the common
    /// synonyms used by folder-per-class datasets (`fear`, `joy`, `surprise`).
    pub fn from_name_or_code(text: &str) -> Option<Expression> {
        let lower = text.to_ascii_lowercase();
        if let Some(e) = Expression::from_code(&text.to_ascii_uppercase()) {
            return Some(e);
        }
        let e = match lower.as_str() {
            "afraid" | "fear" | "fearful" | "scared" => Expression::Afraid,
            "angry" | "anger" => Expression::Angry,
            "disgusted" | "disgust" => Expression::Disgusted,
            "happy" | "happiness" | "joy" | "joyful" => Expression::Happy,
            "neutral" => Expression::Neutral,
            "sad" | "sadness" => Expression::Sad,
            "surprised" | "surprise" => Expression::Surprised,
            _ => return None,
        };
        Some(e)
    }

    /// Index in [`Expression::ALL`] (stable; used in the cache format).
    pub fn index(self) -> u8 {
        self as u8
    }

    pub fn from_index(i: u8) -> Option<Expression> {
        Expression::ALL.get(usize::from(i)).copied()
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Camera angle of a KDEF picture.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Angle {
    /// `S`: straight (frontal).
    #[serde(rename = "S")]
    Straight,
    /// `HL`: half left profile.
    #[serde(rename = "HL")]
    HalfLeft,
    /// `HR`: half right profile.
    #[serde(rename = "HR")]
    HalfRight,
    /// `FL`: full left profile.
    #[serde(rename = "FL")]
    FullLeft,
    /// `FR`: full right profile.
    #[serde(rename = "FR")]
    FullRight,
}

impl Angle {
    pub const ALL: [Angle; 5] = [Angle::Straight, Angle::HalfLeft, Angle::HalfRight, Angle::FullLeft, Angle::FullRight];

    pub const fn code(self) -> &'static str {
        match self {
            Angle::Straight => "S",
            Angle::HalfLeft => "HL",
            Angle::HalfRight => "HR",
            Angle::FullLeft => "FL",
            Angle::FullRight => "FR",
        }
    }

    pub fn from_code(code: &str) -> Option<Angle> {
        Angle::ALL.into_iter().find(|a| a.code() == code)
    }

    /// Head yaw in [-1, 1]: -1 full left profile, 0 straight, 1 full right.
    pub fn yaw(self) -> f32 {
        match self {
            Angle::FullLeft => -1.0,
            Angle::HalfLeft => -0.5,
            Angle::Straight => 0.0,
            Angle::HalfRight => 0.5,
            Angle::FullRight => 1.0,
        }
    }
}

impl FromStr for Angle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Angle::from_code(&s.to_ascii_uppercase()).ok_or_else(|| format!("unknown KDEF angle `{s}`; allowed: S, HL, HR, FL, FR"))
    }
}

impl fmt::Display for Angle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Sex {
    #[serde(rename = "F")]
    Female,
    #[serde(rename = "M")]
    Male,
}

impl Sex {
    pub const fn code(self) -> char {
        match self {
            Sex::Female => 'F',
            Sex::Male => 'M',
        }
    }

    fn from_char(c: char) -> Option<Sex> {
        match c {
            'F' => Some(Sex::Female),
            'M' => Some(Sex::Male),
            _ => None,
        }
    }
}

/// KDEF photo session: every subject was photographed twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Session {
    A,
    B,
}

/// A parsed KDEF file name such as `AF01ANS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KdefCode {
    pub session: Session,
    pub sex: Sex,
    /// 1..=35.
    pub subject: u8,
    pub expression: Expression,
    pub angle: Angle,
}

/// Highest subject number in the public KDEF release (per sex).
pub const KDEF_SUBJECTS_PER_SEX: u8 = 35;

impl KdefCode {
    /// Parses a file stem (no extension), e.g. `AF01ANS` or `BM35SUFR`.
    /// Returns a human reason on failure, for the skip report.
    pub fn parse(stem: &str) -> Result<KdefCode, String> {
        let expected = "expected <session A|B><sex F|M><subject 01-35><expression AF|AN|DI|HA|NE|SA|SU><angle S|HL|HR|FL|FR>, e.g. AF01ANS";
        let chars: Vec<char> = stem.chars().collect();
        if !(7..=8).contains(&chars.len()) || !stem.is_ascii() {
            return Err(format!("misnamed KDEF file `{stem}`: {expected}"));
        }
        let upper = stem.to_ascii_uppercase();
        let session = match &upper[0..1] {
            "A" => Session::A,
            "B" => Session::B,
            other => return Err(format!("misnamed KDEF file `{stem}`: session `{other}` is not A or B")),
        };
        let sex = Sex::from_char(chars[1].to_ascii_uppercase()).ok_or_else(|| format!("misnamed KDEF file `{stem}`: sex `{}` is not F or M", chars[1]))?;
        let subject: u8 = upper[2..4].parse().map_err(|_| format!("misnamed KDEF file `{stem}`: subject `{}` is not two digits", &upper[2..4]))?;
        if subject == 0 || subject > KDEF_SUBJECTS_PER_SEX {
            return Err(format!("misnamed KDEF file `{stem}`: subject {subject} is outside 01-35"));
        }
        let expression = Expression::from_code(&upper[4..6])
            .ok_or_else(|| format!("misnamed KDEF file `{stem}`: expression `{}` is not one of AF, AN, DI, HA, NE, SA, SU", &upper[4..6]))?;
        let angle =
            Angle::from_code(&upper[6..]).ok_or_else(|| format!("misnamed KDEF file `{stem}`: angle `{}` is not one of S, HL, HR, FL, FR", &upper[6..]))?;
        Ok(KdefCode { session, sex, subject, expression, angle })
    }

    /// The person: sex + subject (`F01`). Sessions A and B are the same
    /// person, so they share an identity and never straddle the split.
    pub fn identity(&self) -> String {
        format!("{}{:02}", self.sex.code(), self.subject)
    }

    /// The folder name KDEF uses for this session and subject (`AF01`).
    pub fn folder(&self) -> String {
        format!("{:?}{}{:02}", self.session, self.sex.code(), self.subject)
    }

    /// The file stem (`AF01ANS`).
    pub fn stem(&self) -> String {
        format!("{}{}{}", self.folder(), self.expression.code(), self.angle.code())
    }
}

/// A parsed AKDEF file name such as `FAFFL` (averaged female, afraid, full left).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AkdefCode {
    pub sex: Sex,
    pub expression: Expression,
    pub angle: Angle,
}

impl AkdefCode {
    pub fn parse(stem: &str) -> Result<AkdefCode, String> {
        let expected = "expected <sex F|M><expression AF|AN|DI|HA|NE|SA|SU><angle S|HL|HR|FL|FR>, e.g. FHAS";
        if !(4..=5).contains(&stem.len()) || !stem.is_ascii() {
            return Err(format!("misnamed AKDEF file `{stem}`: {expected}"));
        }
        let upper = stem.to_ascii_uppercase();
        let sex = Sex::from_char(upper.as_bytes()[0] as char).ok_or_else(|| format!("misnamed AKDEF file `{stem}`: {expected}"))?;
        let expression = Expression::from_code(&upper[1..3]).ok_or_else(|| format!("misnamed AKDEF file `{stem}`: {expected}"))?;
        let angle = Angle::from_code(&upper[3..]).ok_or_else(|| format!("misnamed AKDEF file `{stem}`: {expected}"))?;
        Ok(AkdefCode { sex, expression, angle })
    }

    /// Each AKDEF picture averages 35 people of one sex: one "identity" per sex.
    pub fn identity(&self) -> String {
        format!("average-{}", self.sex.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_field_of_a_kdef_code() {
        let c = KdefCode::parse("BM35SUFR").unwrap();
        assert_eq!(c, KdefCode { session: Session::B, sex: Sex::Male, subject: 35, expression: Expression::Surprised, angle: Angle::FullRight });
        assert_eq!(c.identity(), "M35");
        assert_eq!(c.folder(), "BM35");
        assert_eq!(c.stem(), "BM35SUFR");
        assert_eq!(KdefCode::parse("af01has").unwrap().expression, Expression::Happy);
    }

    #[test]
    fn rejects_misnamed_kdef_files_with_a_reason() {
        for (bad, why) in [
            ("AF01XXS", "expression"),
            ("CF01HAS", "session"),
            ("AX01HAS", "sex"),
            ("AF36HAS", "outside"),
            ("AF01HAQ", "angle"),
            ("AF1HAS", "expected"),
            ("AFxxHAS", "two digits"),
        ] {
            let err = KdefCode::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn parses_akdef_codes() {
        let c = AkdefCode::parse("FAFFL").unwrap();
        assert_eq!((c.sex, c.expression, c.angle), (Sex::Female, Expression::Afraid, Angle::FullLeft));
        assert_eq!(AkdefCode::parse("MHAS").unwrap().expression, Expression::Happy);
        assert!(AkdefCode::parse("MHAX").is_err());
    }

    #[test]
    fn expression_names_and_codes_round_trip() {
        for e in Expression::ALL {
            assert_eq!(Expression::from_code(e.code()), Some(e));
            assert_eq!(Expression::from_name_or_code(e.name()), Some(e));
            assert_eq!(Expression::from_index(e.index()), Some(e));
        }
        assert_eq!(Expression::from_name_or_code("fear"), Some(Expression::Afraid));
    }
}
