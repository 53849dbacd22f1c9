pub mod pmd;
