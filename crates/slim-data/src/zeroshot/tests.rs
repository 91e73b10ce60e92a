use super::*;

fn req(context: &str, continuation: &str) -> Request {
    Request { context: context.into(), continuation: continuation.into() }
}

/// Documents shaped like the fetched files (abridged from the first line of each).
#[test]
fn prompts_follow_lm_eval_0_3() {
    let d = Task::Boolq
        .parse_line(concat!(
            r#"{"doc_id":0,"doc":{"choices":["yes","no"],"gold":1,"idx":0,"#,
            r#""query":"Ethanol fuel -- All biomass.\nQuestion: does ethanol take more energy?\nAnswer:"}}"#,
        ))
        .unwrap();
    let ctx = "Ethanol fuel -- All biomass.\nQuestion: does ethanol take more energy?\nAnswer:";
    assert_eq!(d.requests, vec![req(ctx, " yes"), req(ctx, " no")]);
    assert_eq!((d.gold, d.doc_id), (1, 0));

    let d = Task::Piqa
        .parse_line(concat!(
            r#"{"doc_id":3,"doc":{"goal":"How to dry?","sol1":"Use a towel.","sol2":"Use a rock.","#,
            r#""label":1,"query":"Goal: How to dry?\nAnswer:","choices":["Use a towel.","Use a rock."],"#,
            r#""gold":1}}"#,
        ))
        .unwrap();
    assert_eq!(
        d.requests,
        vec![
            req("Question: How to dry?\nAnswer:", " Use a towel."),
            req("Question: How to dry?\nAnswer:", " Use a rock.")
        ]
    );
    assert_eq!((d.gold, d.doc_id), (1, 3));

    let d = Task::Hellaswag
        .parse_line(concat!(
            r#"{"doc_id":0,"doc":{"choices":["is using wrap.","starts pulling up roofing."],"gold":1,"#,
            r#""ind":24,"query":"Roof shingle removal: A man is sitting on a roof. He"}}"#,
        ))
        .unwrap();
    assert_eq!(
        d.requests[1],
        req("Roof shingle removal: A man is sitting on a roof. He", " starts pulling up roofing.")
    );
    assert_eq!(d.choices[1], "starts pulling up roofing.");

    let d = Task::Winogrande
        .parse_line(concat!(
            r#"{"doc_id":0,"doc":{"answer":"2","index":0,"option1":"Sarah","option2":"Maria","#,
            r#""sentence":"Sarah was a better surgeon than Maria so _ always got the easier cases. "}}"#,
        ))
        .unwrap();
    assert_eq!(
        d.requests,
        vec![
            req("Sarah was a better surgeon than Maria so Sarah", " always got the easier cases."),
            req("Sarah was a better surgeon than Maria so Maria", " always got the easier cases.")
        ]
    );
    assert_eq!(d.gold, 1);

    let d = Task::ArcEasy
        .parse_line(concat!(
            r#"{"doc_id":0,"doc":{"choices":["Sunlight.","Land."],"gold":0,"id":"Mercury_417466","#,
            r#""query":"Question: Which statement?\nAnswer:"}}"#,
        ))
        .unwrap();
    assert_eq!(d.requests[0], req("Question: Which statement?\nAnswer:", " Sunlight."));

    let d = Task::Openbookqa
        .parse_line(concat!(
            r#"{"doc_id":0,"doc":{"choices":["make calls","quit eating lunch out"],"gold":1,"id":"8-343","#,
            r#""query":"Question: The best way to save money is to\nAnswer:"}}"#,
        ))
        .unwrap();
    assert_eq!(d.requests[1], req("The best way to save money is to", " quit eating lunch out"));

    let d = Task::Lambada
        .parse_line(
            r#"{"doc_id":0,"doc":{"answers_text":["signs"],"choices":["signs"],"id":0,"query":"I don't care about"}}"#,
        )
        .unwrap();
    assert_eq!(d.requests, vec![req("I don't care about", " signs")]);
}

#[test]
fn malformed_documents_are_rejected_with_the_reason() {
    let err = |task: Task, line: &str| format!("{:#}", task.parse_line(line).unwrap_err());
    assert!(err(Task::Boolq, "{").contains("not JSON"));
    assert!(err(Task::Boolq, r#"{"doc":{}}"#).contains("doc_id"));
    assert!(err(Task::Boolq, r#"{"doc_id":0,"doc":{"choices":["yes","no"],"gold":2,"query":"q"}}"#)
        .contains("gold 2 with 2 choices"));
    assert!(err(Task::Openbookqa, r#"{"doc_id":0,"doc":{"choices":["a"],"gold":0,"query":"no wrapper"}}"#)
        .contains("wrapper"));
    assert!(err(
        Task::Winogrande,
        r#"{"doc_id":0,"doc":{"answer":"1","option1":"a","option2":"b","sentence":"no blank"}}"#
    )
    .contains("no `_`"));
    assert!(err(
        Task::Winogrande,
        r#"{"doc_id":0,"doc":{"answer":"3","option1":"a","option2":"b","sentence":"a _ b"}}"#
    )
    .contains("neither 1 nor 2"));
    assert!(err(Task::Piqa, r#"{"doc_id":0,"doc":{"goal":"g","sol1":"a","label":0}}"#).contains("sol2"));
}

#[test]
fn task_names_round_trip_and_the_paper_metrics_follow_llm_pruner() {
    for t in Task::ALL {
        assert_eq!(t.name().parse::<Task>().unwrap(), t);
    }
    assert!(format!("{:#}", "arc".parse::<Task>().unwrap_err()).contains("unknown task `arc`"));
    let norm: Vec<Task> = Task::PAPER.into_iter().filter(|t| t.paper_metric() == Some(PaperMetric::AccNorm)).collect();
    assert_eq!(norm, vec![Task::Hellaswag, Task::ArcChallenge, Task::Openbookqa]);
    assert_eq!(Task::Lambada.paper_metric(), None);
}

#[test]
fn load_reports_the_file_and_line_of_a_bad_document() {
    let dir = std::env::temp_dir().join(format!("slim-zeroshot-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("datasets/zeroshot")).unwrap();
    let path = Task::Lambada.path(&dir);
    let good = |id: u64| format!(r#"{{"doc_id":{id},"doc":{{"choices":["w"],"query":"a b"}}}}"#);
    std::fs::write(&path, format!("{}\n{}\n{{\"doc_id\":2}}\n", good(0), good(1))).unwrap();
    assert_eq!(Task::Lambada.load(&dir, Some(2)).unwrap().len(), 2);
    let e = format!("{:#}", Task::Lambada.load(&dir, None).unwrap_err());
    assert!(e.contains("lambada.jsonl:3") && e.contains("malformed lambada document"), "{e}");
    let e = format!("{:#}", Task::Boolq.load(&dir, None).unwrap_err());
    assert!(e.contains("cargo xtask fetch zeroshot"), "{e}");
    // A repeated doc_id would make two documents share one line of a samples file: an error naming both lines.
    std::fs::write(&path, format!("{}\n{}\n{}\n", good(0), good(7), good(7))).unwrap();
    let e = format!("{:#}", Task::Lambada.load(&dir, None).unwrap_err());
    assert!(e.contains("lambada.jsonl:3") && e.contains("document id 7 again (first on line 2)"), "{e}");
    assert_eq!(Task::Lambada.load(&dir, Some(2)).unwrap().len(), 2, "the repeat lies past the limit");
    std::fs::remove_dir_all(dir).unwrap();
}
